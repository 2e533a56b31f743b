import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

import { App } from './App';
import { pageConfig } from './config';
import { VoiceSession } from './session';
import './styles.css';

// The session (and with it window.__voiceTest) exists before React renders anything.
const session = new VoiceSession(pageConfig);

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App session={session} />
  </StrictMode>,
);
