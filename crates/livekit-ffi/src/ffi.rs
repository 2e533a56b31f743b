//! Loading `liblivekit_ffi.so`, the request/response path, the event callback and the routing of
//! events to whoever waits for them.

use std::{
    any::Any,
    collections::{HashMap, VecDeque},
    ffi::{c_char, CString},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
};

use anyhow::{anyhow, bail, Context, Result};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::{
    audio::AudioFrame,
    proto::{self, ffi_event, ffi_request, ffi_response},
    room::{self, RoomEvent},
};

/// The library builds this client speaks to: the FFI protocol of livekit-ffi 0.13 (PyPI
/// `livekit==1.2.0` ships 0.13.2). Field numbers change between minor versions.
pub const SUPPORTED_FFI_VERSION: &str = "0.13";

/// `FfiHandleId livekit_ffi_request(const uint8_t *data, size_t len, const uint8_t **res_ptr, size_t *res_len)`
type RequestFn = unsafe extern "C" fn(*const u8, usize, *mut *const u8, *mut usize) -> u64;
/// `bool livekit_ffi_drop_handle(FfiHandleId handle)`
type DropHandleFn = unsafe extern "C" fn(u64) -> bool;
/// `void livekit_ffi_initialize(FfiCallbackFn cb, bool capture_logs, const char *sdk, const char *sdk_version)`
type InitializeFn = unsafe extern "C" fn(EventCallbackFn, bool, *const c_char, *const c_char);
/// `void (*FfiCallbackFn)(const uint8_t *data, size_t len)`
type EventCallbackFn = unsafe extern "C" fn(*const u8, usize);

/// The process-wide instance: the library can be initialised once per process (one callback), and
/// it is never unloaded, so the function pointers below stay valid for the life of the process.
static GLOBAL: OnceLock<Arc<Ffi>> = OnceLock::new();
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// Callbacks that arrived for an async id nobody registered are kept this long (a few), in case
/// the library ignored `request_async_id` and the waiter re-keys after the fact.
const MAX_UNCLAIMED: usize = 32;
/// Sanity bounds for buffers the library hands us by address.
const MAX_FRAME_SAMPLES: u64 = 1 << 20;
const MAX_DATA_BYTES: u64 = 64 << 20;

/// A loaded and initialised `liblivekit_ffi`. One per process: [`Ffi::load`] returns the same
/// instance on later calls.
pub struct Ffi {
    path: PathBuf,
    version: String,
    request_fn: Option<RequestFn>,
    drop_fn: DropHandleFn,
    /// Keeps the code mapped; never dropped for the global instance (see `GLOBAL`).
    _lib: Option<libloading::Library>,
    next_async_id: AtomicU64,
    warned_async_id: AtomicBool,
    panicked: Mutex<Option<String>>,
    calls: Mutex<Calls>,
    rooms: Mutex<HashMap<u64, RoomSink>>,
    streams: Mutex<HashMap<u64, StreamSink>>,
}

impl std::fmt::Debug for Ffi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ffi").field("path", &self.path).field("version", &self.version).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Calls {
    pending: HashMap<u64, Pending>,
    unclaimed: VecDeque<(u64, ffi_event::Message)>,
}

struct Pending {
    /// None for fire-and-forget requests.
    tx: Option<oneshot::Sender<ffi_event::Message>>,
    /// Memory the request points into (samples, data payload), freed when the callback arrives.
    _keep_alive: Option<Box<dyn Any + Send>>,
}

pub(crate) struct RoomSink {
    pub(crate) tx: mpsc::UnboundedSender<RoomEvent>,
    pub(crate) connected: Arc<AtomicBool>,
}

pub(crate) struct StreamSink {
    pub(crate) tx: mpsc::Sender<AudioFrame>,
    pub(crate) dropped: Arc<AtomicU64>,
    /// The remote track and its room: the stream ends (for the consumer) when the track is
    /// unsubscribed or the room closes. The library itself keeps such a stream open.
    pub(crate) track_sid: String,
    pub(crate) room_handle: u64,
}

/// A handle the library gave us; released with `livekit_ffi_drop_handle` on drop.
pub(crate) struct OwnedHandle {
    id: u64,
    ffi: Arc<Ffi>,
}

impl OwnedHandle {
    pub(crate) fn new(ffi: &Arc<Ffi>, id: u64) -> Self {
        Self { id, ffi: ffi.clone() }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        self.ffi.release(self.id);
    }
}

impl std::fmt::Debug for OwnedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FfiHandle({})", self.id)
    }
}

/// Lock, ignoring poisoning: every critical section here leaves the maps consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ffi {
    /// Where the library is expected: `$LIVEKIT_FFI_LIB` (or the Python SDK's `$LIVEKIT_LIB_PATH`),
    /// else `livekit-ffi/liblivekit_ffi.so` in the model cache (`$VOICE_MODELS_DIR`, else
    /// `$XDG_CACHE_HOME/voice-ai/models`, else `~/.cache/voice-ai/models`), where
    /// `cargo run -p voice-models -- fetch livekit-ffi` puts it.
    pub fn locate() -> Result<PathBuf> {
        for var in ["LIVEKIT_FFI_LIB", "LIVEKIT_LIB_PATH"] {
            if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    bail!("${var} points at {}, which is not a file", p.display());
                }
                return Ok(p);
            }
        }
        let p = model_cache_dir().join("livekit-ffi").join("liblivekit_ffi.so");
        if p.is_file() {
            Ok(p)
        } else {
            bail!(
                "liblivekit_ffi.so not found at {}: fetch it with `cargo run -p voice-models -- fetch livekit-ffi` \
                 or set LIVEKIT_FFI_LIB to its path",
                p.display()
            )
        }
    }

    /// Load and initialise the library (once per process; later calls return the same instance).
    /// Fails with a clear message if the file is missing or is not a livekit-ffi 0.13 build.
    pub fn load(path: &Path) -> Result<Arc<Ffi>> {
        let _guard = lock(&LOAD_LOCK);
        if let Some(ffi) = GLOBAL.get() {
            if ffi.path != path {
                tracing::warn!(
                    loaded = %ffi.path.display(),
                    requested = %path.display(),
                    "liblivekit_ffi is already loaded in this process; using the loaded one"
                );
            }
            return Ok(ffi.clone());
        }
        if !path.is_file() {
            bail!(
                "liblivekit_ffi.so not found at {}: fetch it with `cargo run -p voice-models -- fetch livekit-ffi` \
                 or set LIVEKIT_FFI_LIB to its path",
                path.display()
            );
        }
        // SAFETY: loading runs the library's ELF initialisers. liblivekit_ffi.so is LiveKit's Rust
        // cdylib (checked by sha256 when fetched) and its initialisers only set up statics.
        let lib = unsafe { libloading::Library::new(path) }.with_context(|| format!("loading {}", path.display()))?;
        let (version, request_fn, drop_fn, init_fn) = match Self::symbols(&lib, path) {
            Ok(s) => s,
            Err(e) => {
                // Never dlclose a Rust cdylib we have called into (thread-local destructors); the
                // process is about to report the error anyway.
                std::mem::forget(lib);
                return Err(e);
            }
        };
        let ffi = Arc::new(Ffi { path: path.to_path_buf(), version, request_fn: Some(request_fn), drop_fn, _lib: Some(lib), ..Ffi::empty(drop_fn) });
        // Set before initialising, so that the first callback finds it.
        if GLOBAL.set(ffi.clone()).is_err() {
            unreachable!("GLOBAL is only set under LOAD_LOCK");
        }
        let sdk = CString::new("rust").expect("no NUL");
        let sdk_version = CString::new(env!("CARGO_PKG_VERSION")).expect("no NUL");
        // Logs come through the callback (forwarded to `tracing`, target "livekit") unless
        // LIVEKIT_FFI_CAPTURE_LOGS=0, in which case the library logs to stderr per RUST_LOG.
        let capture_logs = std::env::var("LIVEKIT_FFI_CAPTURE_LOGS").map(|v| v != "0").unwrap_or(true);
        // SAFETY: `on_event` has the callback's C signature and is thread-safe and non-blocking, as
        // the library requires; the two strings are NUL-terminated and outlive the call (the
        // library copies them).
        unsafe { init_fn(on_event, capture_logs, sdk.as_ptr(), sdk_version.as_ptr()) };
        tracing::info!(path = %ffi.path.display(), version = %ffi.version, "liblivekit_ffi loaded");
        Ok(ffi)
    }

    fn symbols(lib: &libloading::Library, path: &Path) -> Result<(String, RequestFn, DropHandleFn, InitializeFn)> {
        let version = build_version(lib).with_context(|| {
            format!("{} does not look like liblivekit_ffi {SUPPORTED_FFI_VERSION}.x (the one in the PyPI wheel livekit==1.2.0)", path.display())
        })?;
        if !version.starts_with(&format!("{SUPPORTED_FFI_VERSION}.")) {
            bail!(
                "{} is liblivekit_ffi {version}; this client speaks the FFI protocol of {SUPPORTED_FFI_VERSION}.x \
                 (PyPI livekit==1.2.0): fetch model `livekit-ffi` again",
                path.display()
            );
        }
        // SAFETY: the types are the C signatures of livekit_ffi.h (and of livekit_ffi_initialize,
        // which the header omits but every SDK calls with these arguments). The pointers are copied
        // out of the `Symbol`s; they stay valid because the library is never unloaded.
        unsafe {
            let request: RequestFn = *lib.get::<RequestFn>(b"livekit_ffi_request\0").context("livekit_ffi_request")?;
            let drop: DropHandleFn = *lib.get::<DropHandleFn>(b"livekit_ffi_drop_handle\0").context("livekit_ffi_drop_handle")?;
            let init: InitializeFn = *lib.get::<InitializeFn>(b"livekit_ffi_initialize\0").context("livekit_ffi_initialize")?;
            Ok((version, request, drop, init))
        }
    }

    fn empty(drop_fn: DropHandleFn) -> Ffi {
        Ffi {
            path: PathBuf::new(),
            version: String::new(),
            request_fn: None,
            drop_fn,
            _lib: None,
            // Our async ids start high, away from the library's own counter (handles and its async
            // ids), in case a request's `request_async_id` were ignored.
            next_async_id: AtomicU64::new(1 << 48),
            warned_async_id: AtomicBool::new(false),
            panicked: Mutex::new(None),
            calls: Mutex::new(Calls::default()),
            rooms: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Decode and route one event as if the library had sent it, on an instance with no library
    /// (no rooms, no calls): what the fuzz target `livekit_event` drives. Arbitrary bytes must
    /// never panic, and what it keeps (unclaimed replies) stays bounded.
    #[doc(hidden)]
    pub fn dispatch_detached(bytes: &[u8]) {
        unsafe extern "C" fn drop_nothing(_: u64) -> bool {
            false
        }
        static DETACHED: std::sync::OnceLock<Arc<Ffi>> = std::sync::OnceLock::new();
        DETACHED.get_or_init(|| Arc::new(Ffi::empty(drop_nothing))).dispatch(bytes);
    }

    /// An instance without a library, for unit tests of the event routing.
    #[cfg(test)]
    pub(crate) fn for_tests(drop_fn: DropHandleFn) -> Arc<Ffi> {
        Arc::new(Ffi::empty(drop_fn))
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The library's build version (e.g. `0.13.2`).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn release(&self, handle: u64) {
        if handle != 0 {
            // SAFETY: drop_fn is livekit_ffi_drop_handle of a library that is never unloaded (or a
            // test stub); it takes any id and returns false for unknown ones.
            let known = unsafe { (self.drop_fn)(handle) };
            tracing::trace!(handle, known, "released FFI handle");
        }
    }

    fn check_alive(&self) -> Result<()> {
        match lock(&self.panicked).as_ref() {
            Some(msg) => bail!("liblivekit_ffi panicked earlier ({msg}); restart the process"),
            None => Ok(()),
        }
    }

    /// A synchronous request: send it, copy the response out, release the response's handle.
    pub(crate) fn request(&self, message: ffi_request::Message) -> Result<ffi_response::Message> {
        self.check_alive()?;
        let Some(request_fn) = self.request_fn else { bail!("no liblivekit_ffi loaded") };
        let kind = request_name(&message);
        let data = proto::FfiRequest { message: Some(message) }.encode_to_vec();
        let mut res_ptr: *const u8 = std::ptr::null();
        let mut res_len: usize = 0;
        // SAFETY: `data` is valid for `data.len()` bytes during the call; `res_ptr`/`res_len` are
        // valid out-pointers. On success the library points `res_ptr` at the encoded response, which
        // it keeps alive until the returned handle is dropped (below, after copying).
        let handle = unsafe { request_fn(data.as_ptr(), data.len(), &mut res_ptr, &mut res_len) };
        if handle == 0 {
            bail!("liblivekit_ffi rejected the {kind} request (its log says why)");
        }
        let bytes = if res_ptr.is_null() || res_len == 0 {
            Vec::new()
        } else {
            // SAFETY: see above: `res_len` bytes at `res_ptr`, alive until `handle` is released.
            unsafe { std::slice::from_raw_parts(res_ptr, res_len) }.to_vec()
        };
        self.release(handle);
        let response = proto::FfiResponse::decode(bytes.as_slice()).with_context(|| format!("decoding the {kind} response"))?;
        response.message.ok_or_else(|| anyhow!("empty response to the {kind} request"))
    }

    /// An asynchronous request: `build` gets the async id to put in `request_async_id`; the answer
    /// is the callback with that id. `keep_alive` is memory the request points into; it is freed
    /// when the callback arrives (even if the returned future is dropped before).
    pub(crate) async fn call(
        &self,
        keep_alive: Option<Box<dyn Any + Send>>,
        build: impl FnOnce(u64) -> ffi_request::Message,
    ) -> Result<ffi_event::Message> {
        let (tx, rx) = oneshot::channel();
        self.start_call(Some(tx), keep_alive, build)?;
        match rx.await {
            Ok(message) => Ok(message),
            Err(_) => {
                self.check_alive()?;
                bail!("liblivekit_ffi dropped the request")
            }
        }
    }

    /// Fire and forget (used from `Drop`): the callback is consumed and ignored.
    pub(crate) fn call_detached(&self, build: impl FnOnce(u64) -> ffi_request::Message) {
        if let Err(e) = self.start_call(None, None, build) {
            tracing::debug!(error = %e, "detached livekit request failed");
        }
    }

    fn start_call(
        &self,
        tx: Option<oneshot::Sender<ffi_event::Message>>,
        keep_alive: Option<Box<dyn Any + Send>>,
        build: impl FnOnce(u64) -> ffi_request::Message,
    ) -> Result<()> {
        let id = self.next_async_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.calls).pending.insert(id, Pending { tx, _keep_alive: keep_alive });
        let response = match self.request(build(id)) {
            Ok(r) => r,
            Err(e) => {
                lock(&self.calls).pending.remove(&id);
                return Err(e);
            }
        };
        let Some(assigned) = response_async_id(&response) else {
            lock(&self.calls).pending.remove(&id);
            bail!("unexpected response {:?}", response_name(&response));
        };
        if assigned != id {
            // The library chose its own id: move the entry, and take the callback if it came already.
            if !self.warned_async_id.swap(true, Ordering::Relaxed) {
                tracing::debug!("liblivekit_ffi ignores request_async_id; re-keying callbacks");
            }
            let mut calls = lock(&self.calls);
            let Some(pending) = calls.pending.remove(&id) else { return Ok(()) };
            if let Some(pos) = calls.unclaimed.iter().position(|(k, _)| *k == assigned) {
                let (_, message) = calls.unclaimed.remove(pos).expect("index from position");
                drop(calls);
                self.deliver(pending, message);
            } else {
                calls.pending.insert(assigned, pending);
            }
        }
        Ok(())
    }

    fn deliver(&self, pending: Pending, message: ffi_event::Message) {
        let undelivered = match pending.tx {
            Some(tx) => tx.send(message).err(),
            None => Some(message),
        };
        let Some(message) = undelivered else { return };
        // Nobody waits any more (e.g. a connect future dropped by a timeout): undo and release.
        let handles = callback_handles(&message);
        if let ffi_event::Message::Connect(proto::ConnectCallback { message: Some(proto::connect_callback::Message::Result(r)), .. }) = &message {
            // A room nobody holds would stay joined: leave it. Not from this (possibly the
            // library's) thread, which must not block on a request.
            let (room_handle, ffi) = (r.room.handle.id, GLOBAL.get().cloned());
            if let Some(ffi) = ffi.filter(|f| f.request_fn.is_some()) {
                let spawned = std::thread::Builder::new().name("livekit-abandoned-room".into()).spawn(move || {
                    ffi.call_detached(|id| {
                        ffi_request::Message::Disconnect(proto::DisconnectRequest {
                            room_handle,
                            request_async_id: Some(id),
                            reason: Some(proto::DisconnectReason::ClientInitiated as i32),
                        })
                    });
                    for handle in handles {
                        ffi.release(handle);
                    }
                });
                if spawned.is_err() {
                    tracing::warn!(room_handle, "could not leave an abandoned room (no thread)");
                }
                return;
            }
        }
        for handle in handles {
            self.release(handle);
        }
    }

    pub(crate) fn register_room(&self, room_handle: u64, sink: RoomSink) {
        lock(&self.rooms).insert(room_handle, sink);
    }

    pub(crate) fn unregister_room(&self, room_handle: u64) {
        let sink = lock(&self.rooms).remove(&room_handle);
        drop(sink);
    }

    pub(crate) fn register_stream(&self, stream_handle: u64, sink: StreamSink) {
        lock(&self.streams).insert(stream_handle, sink);
    }

    pub(crate) fn unregister_stream(&self, stream_handle: u64) {
        let sink = lock(&self.streams).remove(&stream_handle);
        drop(sink);
    }

    /// End (for their consumers) the streams `which` selects.
    fn end_streams(&self, which: impl Fn(&StreamSink) -> bool) {
        let mut streams = lock(&self.streams);
        let ended: Vec<u64> = streams.iter().filter(|(_, s)| which(s)).map(|(h, _)| *h).collect();
        let sinks: Vec<StreamSink> = ended.iter().filter_map(|h| streams.remove(h)).collect();
        drop(streams);
        drop(sinks);
    }

    /// One event from the library (any thread). Never panics on bad input, never blocks on a
    /// consumer; never calls into the library while holding one of our locks.
    pub(crate) fn dispatch(self: &Arc<Self>, bytes: &[u8]) {
        let event = match proto::FfiEvent::decode(bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, len = bytes.len(), "undecodable liblivekit_ffi event dropped");
                return;
            }
        };
        let Some(message) = event.message else {
            tracing::trace!("liblivekit_ffi event of a kind this client does not use");
            return;
        };
        match message {
            ffi_event::Message::Logs(batch) => forward_logs(batch),
            ffi_event::Message::Panic(p) => {
                tracing::error!(message = %p.message, "liblivekit_ffi panicked; it is unusable from now on");
                *lock(&self.panicked) = Some(p.message);
                // Fail every waiter (dropping the senders wakes them with an error).
                let pending = std::mem::take(&mut lock(&self.calls).pending);
                drop(pending);
            }
            ffi_event::Message::RoomEvent(ev) => self.route_room_event(ev),
            ffi_event::Message::AudioStreamEvent(ev) => self.route_audio_event(ev),
            message => {
                let Some(id) = callback_async_id(&message) else { return };
                let mut calls = lock(&self.calls);
                if let Some(pending) = calls.pending.remove(&id) {
                    drop(calls);
                    self.deliver(pending, message);
                } else {
                    calls.unclaimed.push_back((id, message));
                    let evicted = if calls.unclaimed.len() > MAX_UNCLAIMED { calls.unclaimed.pop_front() } else { None };
                    drop(calls);
                    if let Some((_, old)) = evicted {
                        for handle in callback_handles(&old) {
                            self.release(handle);
                        }
                    }
                }
            }
        }
    }

    fn route_room_event(self: &Arc<Self>, ev: proto::RoomEvent) {
        let room_handle = ev.room_handle;
        let Some(message) = ev.message else { return };
        if matches!(message, proto::room_event::Message::Eos(_)) {
            // The room is closed: no more events; dropping the senders ends the consumers' streams.
            self.unregister_room(room_handle);
            self.end_streams(|s| s.room_handle == room_handle);
            return;
        }
        // Converting wraps the handles the event carries, so whatever is not delivered is released.
        let Some(event) = room::convert_event(self, room_handle, message) else { return };
        if let RoomEvent::TrackUnsubscribed { sid, .. } = &event {
            self.end_streams(|s| s.track_sid == *sid);
        }
        let undelivered = {
            let rooms = lock(&self.rooms);
            match rooms.get(&room_handle) {
                Some(sink) => {
                    match &event {
                        RoomEvent::Disconnected { .. } => sink.connected.store(false, Ordering::Release),
                        RoomEvent::ConnectionStateChanged { state } => {
                            sink.connected.store(*state != proto::ConnectionState::ConnDisconnected, Ordering::Release)
                        }
                        _ => {}
                    }
                    sink.tx.send(event).err().map(|e| e.0)
                }
                None => Some(event),
            }
        };
        if let Some(event) = undelivered {
            tracing::trace!(room_handle, ?event, "room event for no listener dropped");
        }
    }

    fn route_audio_event(self: &Arc<Self>, ev: proto::AudioStreamEvent) {
        match ev.message {
            Some(proto::audio_stream_event::Message::FrameReceived(received)) => {
                let buffer = received.frame;
                // Released at the end of this scope, after the samples are copied out.
                let _frame_handle = OwnedHandle::new(self, buffer.handle.id);
                let info = buffer.info;
                let sink = lock(&self.streams).get(&ev.stream_handle).map(|s| (s.tx.clone(), s.dropped.clone()));
                // Frames of a stream nobody listens to (any more) are not read, only released.
                let Some((tx, dropped)) = sink else { return };
                let Some(frame) = copy_frame(&info) else {
                    tracing::warn!(?info, "audio frame with an implausible buffer dropped");
                    return;
                };
                if tx.try_send(frame).is_err() {
                    let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(stream = ev.stream_handle, dropped = n, "audio consumer is behind: frames dropped");
                    }
                }
            }
            Some(proto::audio_stream_event::Message::Eos(_)) => self.unregister_stream(ev.stream_handle),
            None => {}
        }
    }
}

/// Copy a frame's samples out of the library's memory.
fn copy_frame(info: &proto::AudioFrameBufferInfo) -> Option<AudioFrame> {
    let n = u64::from(info.num_channels) * u64::from(info.samples_per_channel);
    if info.data_ptr == 0 || !info.data_ptr.is_multiple_of(2) || info.num_channels == 0 || n > MAX_FRAME_SAMPLES {
        return None;
    }
    // SAFETY: the library's AudioFrameBufferInfo describes `num_channels * samples_per_channel`
    // interleaved i16 at `data_ptr`, owned by the frame's handle, which the caller releases only
    // after this copy. The pointer is non-null and aligned (checked above).
    let samples = unsafe { std::slice::from_raw_parts(info.data_ptr as *const i16, n as usize) }.to_vec();
    Some(AudioFrame { samples, sample_rate: info.sample_rate, num_channels: info.num_channels, samples_per_channel: info.samples_per_channel })
}

/// Copy a data packet's payload out of the library's memory (the caller releases its handle).
pub(crate) fn copy_buffer(info: &proto::BufferInfo) -> Option<Vec<u8>> {
    if info.data_len == 0 {
        return Some(Vec::new());
    }
    if info.data_ptr == 0 || info.data_len > MAX_DATA_BYTES {
        return None;
    }
    // SAFETY: BufferInfo describes `data_len` bytes at `data_ptr` owned by the packet's handle,
    // which the caller releases only after this copy. Non-null and bounded (checked above).
    Some(unsafe { std::slice::from_raw_parts(info.data_ptr as *const u8, info.data_len as usize) }.to_vec())
}

/// The C callback. Runs on the library's threads.
unsafe extern "C" fn on_event(data: *const u8, len: usize) {
    if data.is_null() {
        return;
    }
    // SAFETY: the library passes its encoded event, valid for `len` bytes for this call.
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    if let Some(ffi) = GLOBAL.get() {
        // A panic must not unwind into the library.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ffi.dispatch(bytes))).is_err() {
            tracing::error!("panic while handling a liblivekit_ffi event (event dropped)");
        }
    }
}

fn forward_logs(batch: proto::LogBatch) {
    use proto::LogLevel;
    for r in batch.records {
        let (target, message) = (r.target.as_str(), r.message.as_str());
        match LogLevel::try_from(r.level).unwrap_or(LogLevel::LogInfo) {
            LogLevel::LogError => tracing::error!(target: "livekit", lk_target = target, "{message}"),
            LogLevel::LogWarn => tracing::warn!(target: "livekit", lk_target = target, "{message}"),
            LogLevel::LogInfo => tracing::info!(target: "livekit", lk_target = target, "{message}"),
            LogLevel::LogDebug => tracing::debug!(target: "livekit", lk_target = target, "{message}"),
            LogLevel::LogTrace => tracing::trace!(target: "livekit", lk_target = target, "{message}"),
        }
    }
}

/// `build_version()` through the library's uniffi export (contract 30: RustBuffer is
/// `{u64 capacity, u64 len, u8 *data}`); checked before the protocol is used at all.
fn build_version(lib: &libloading::Library) -> Result<String> {
    #[repr(C)]
    struct RustBuffer {
        capacity: u64,
        len: u64,
        data: *mut u8,
    }
    #[repr(C)]
    struct RustCallStatus {
        code: i8,
        error_buf: RustBuffer,
    }
    fn status() -> RustCallStatus {
        RustCallStatus { code: 0, error_buf: RustBuffer { capacity: 0, len: 0, data: std::ptr::null_mut() } }
    }
    type ContractFn = unsafe extern "C" fn() -> u32;
    type VersionFn = unsafe extern "C" fn(*mut RustCallStatus) -> RustBuffer;
    type FreeFn = unsafe extern "C" fn(RustBuffer, *mut RustCallStatus);
    // SAFETY: symbol lookups only; the signatures are uniffi's (contract version checked first,
    // since the RustBuffer layout depends on it).
    unsafe {
        let contract = *lib.get::<ContractFn>(b"ffi_livekit_ffi_uniffi_contract_version\0").context("no uniffi contract version")?;
        let c = contract();
        if c != 30 {
            bail!("uniffi contract version {c}, expected 30");
        }
        let version_fn = *lib.get::<VersionFn>(b"uniffi_livekit_ffi_fn_func_build_version\0").context("no build_version")?;
        let free_fn = *lib.get::<FreeFn>(b"ffi_livekit_ffi_rustbuffer_free\0").context("no rustbuffer_free")?;
        let mut st = status();
        let buf = version_fn(&mut st);
        if st.code != 0 {
            bail!("build_version failed (status {})", st.code);
        }
        let version = if buf.data.is_null() {
            String::new()
        } else {
            String::from_utf8_lossy(std::slice::from_raw_parts(buf.data, buf.len as usize)).into_owned()
        };
        let mut st = status();
        free_fn(buf, &mut st);
        Ok(version)
    }
}

fn model_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOICE_MODELS_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("voice-ai").join("models");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("voice-ai").join("models")
}

fn response_async_id(r: &ffi_response::Message) -> Option<u64> {
    use ffi_response::Message as M;
    Some(match r {
        M::Connect(m) => m.async_id,
        M::Disconnect(m) => m.async_id,
        M::PublishTrack(m) => m.async_id,
        M::UnpublishTrack(m) => m.async_id,
        M::PublishData(m) => m.async_id,
        M::CaptureAudioFrame(m) => m.async_id,
        _ => return None,
    })
}

fn callback_async_id(e: &ffi_event::Message) -> Option<u64> {
    use ffi_event::Message as M;
    Some(match e {
        M::Connect(m) => m.async_id,
        M::Disconnect(m) => m.async_id,
        M::PublishTrack(m) => m.async_id,
        M::UnpublishTrack(m) => m.async_id,
        M::PublishData(m) => m.async_id,
        M::CaptureAudioFrame(m) => m.async_id,
        _ => return None,
    })
}

/// The owned handles a callback hands over (released if nobody takes the callback).
fn callback_handles(e: &ffi_event::Message) -> Vec<u64> {
    use ffi_event::Message as M;
    let mut out = Vec::new();
    match e {
        M::Connect(cb) => {
            if let Some(proto::connect_callback::Message::Result(r)) = &cb.message {
                out.push(r.room.handle.id);
                out.push(r.local_participant.handle.id);
                for p in &r.participants {
                    out.push(p.participant.handle.id);
                    out.extend(p.publications.iter().map(|x| x.handle.id));
                }
            }
        }
        M::PublishTrack(cb) => {
            if let Some(proto::publish_track_callback::Message::Publication(p)) = &cb.message {
                out.push(p.handle.id);
            }
        }
        _ => {}
    }
    out
}

fn request_name(m: &ffi_request::Message) -> &'static str {
    use ffi_request::Message as M;
    match m {
        M::Connect(_) => "Connect",
        M::Disconnect(_) => "Disconnect",
        M::PublishTrack(_) => "PublishTrack",
        M::UnpublishTrack(_) => "UnpublishTrack",
        M::PublishData(_) => "PublishData",
        M::CreateAudioTrack(_) => "CreateAudioTrack",
        M::NewAudioStream(_) => "NewAudioStream",
        M::NewAudioSource(_) => "NewAudioSource",
        M::CaptureAudioFrame(_) => "CaptureAudioFrame",
        M::ClearAudioBuffer(_) => "ClearAudioBuffer",
        M::ReadyForRoomEvent(_) => "ReadyForRoomEvent",
    }
}

fn response_name(m: &ffi_response::Message) -> &'static str {
    use ffi_response::Message as M;
    match m {
        M::Connect(_) => "Connect",
        M::Disconnect(_) => "Disconnect",
        M::PublishTrack(_) => "PublishTrack",
        M::UnpublishTrack(_) => "UnpublishTrack",
        M::PublishData(_) => "PublishData",
        M::CreateAudioTrack(_) => "CreateAudioTrack",
        M::NewAudioStream(_) => "NewAudioStream",
        M::NewAudioSource(_) => "NewAudioSource",
        M::CaptureAudioFrame(_) => "CaptureAudioFrame",
        M::ClearAudioBuffer(_) => "ClearAudioBuffer",
        M::ReadyForRoomEvent(_) => "ReadyForRoomEvent",
    }
}

#[cfg(test)]
mod tests;
