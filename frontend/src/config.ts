// Page options from the query string (all optional):
//   ?room=NAME&identity=ID   prefill the token request
//   ?processing=0            turn off echoCancellation/noiseSuppression/autoGainControl together
//   ?aec=0&ns=0&agc=0        turn them off one by one (default: all on)
const q = new URLSearchParams(window.location.search);

const flag = (name: string, dflt: boolean): boolean => {
  const v = q.get(name);
  if (v === null) return dflt;
  return !['0', 'false', 'off', 'no'].includes(v.toLowerCase());
};

const processing = flag('processing', true);

export const pageConfig = {
  room: q.get('room') ?? '',
  identity: q.get('identity') ?? '',
  echoCancellation: flag('aec', processing),
  noiseSuppression: flag('ns', processing),
  autoGainControl: flag('agc', processing),
};
