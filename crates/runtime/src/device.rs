//! Device choice and the automatic CPU fallback every service shares.
//!
//! Three moments can go wrong on a GPU, and each is handled here once:
//! 1. start-up: the CUDA device does not initialise (no driver, no GPU, not built with `cuda`)
//!    -> [`select_device`] picks the CPU and says why;
//! 2. model load: the model does not fit the service's GPU memory budget, or loading fails
//!    (out of memory included) -> [`load_with_fallback`] loads it on the CPU instead;
//! 3. a request: a CUDA error mid-request -> [`ModelSlot::run`] marks the service degraded,
//!    counts it, and retries that request on a CPU copy of the model (loaded on first need).
//!
//! Fault injection for tests (works without a GPU):
//! - `VOICE_FAULT_CUDA_INIT=1`: CUDA initialisation fails;
//! - `VOICE_FAULT_DEVICE_ERROR_AT=N`: the N-th request (1-based) run on the primary model fails as a
//!   CUDA error would, whatever the device, so the degraded path and CPU retry are exercised.

use std::{
    fmt,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Instant,
};

use anyhow::{anyhow, Result};
use candle_core::Device;
use serde::Serialize;

use crate::metrics::Metrics;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" | "" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => {
                if let Some(n) = t.strip_prefix("cuda:") {
                    n.parse().map(Self::Cuda).map_err(|_| format!("`{s}`: the CUDA ordinal must be a number, e.g. cuda:0"))
                } else {
                    Err(format!("unknown device `{s}` (use auto, cpu, cuda or cuda:N)"))
                }
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A device with a printable label (`cpu`, `cuda:0`).
#[derive(Debug, Clone)]
pub struct ChosenDevice {
    pub device: Device,
    pub label: String,
}

impl ChosenDevice {
    pub fn cpu() -> Self {
        Self { device: Device::Cpu, label: "cpu".into() }
    }
    pub fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }
}

/// Whether this binary was compiled with CUDA support.
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

fn fault_cuda_init() -> bool {
    std::env::var("VOICE_FAULT_CUDA_INIT").map(|v| v == "1" || v == "true").unwrap_or(false)
}

fn try_cuda(ordinal: usize) -> Result<ChosenDevice> {
    if fault_cuda_init() {
        return Err(anyhow!("CUDA initialisation failed (injected by VOICE_FAULT_CUDA_INIT)"));
    }
    if !cuda_compiled() {
        return Err(anyhow!("this binary was built without the `cuda` feature"));
    }
    let device = Device::new_cuda(ordinal).map_err(|e| anyhow!("CUDA device {ordinal}: {e}"))?;
    Ok(ChosenDevice { device, label: format!("cuda:{ordinal}") })
}

/// Resolve `--device` to a device that works, falling back to the CPU with a logged reason.
pub fn select_device(spec: DeviceSpec) -> ChosenDevice {
    match spec {
        DeviceSpec::Cpu => {
            tracing::info!(device = "cpu", requested = %spec, "using the CPU as requested");
            ChosenDevice::cpu()
        }
        DeviceSpec::Auto | DeviceSpec::Cuda(_) => {
            let ordinal = if let DeviceSpec::Cuda(n) = spec { n } else { 0 };
            match try_cuda(ordinal) {
                Ok(d) => {
                    tracing::info!(device = %d.label, requested = %spec, "using the GPU");
                    d
                }
                Err(e) => {
                    if spec == DeviceSpec::Auto && !cuda_compiled() && !fault_cuda_init() {
                        tracing::info!(device = "cpu", requested = %spec, "using the CPU (built without CUDA)");
                    } else {
                        tracing::warn!(device = "cpu", requested = %spec, reason = %e,
                            "CUDA is not usable: falling back to the CPU");
                    }
                    ChosenDevice::cpu()
                }
            }
        }
    }
}

fn fmt_gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Load a model on `chosen`, or on the CPU when the GPU budget is too small or the GPU load fails.
///
/// `estimated_bytes` is the model's expected GPU footprint (weights plus working memory);
/// `budget` is `--gpu-memory-budget` in bytes (0 = no limit).
pub fn load_with_fallback<M>(
    chosen: &ChosenDevice,
    model_name: &str,
    estimated_bytes: u64,
    budget: u64,
    metrics: &Metrics,
    load: impl Fn(&Device) -> Result<M>,
) -> Result<(M, ChosenDevice)> {
    let mut target = chosen.clone();
    if target.is_cuda() && budget > 0 && estimated_bytes > budget {
        tracing::warn!(model = model_name, needs = %fmt_gb(estimated_bytes), budget = %fmt_gb(budget),
            "model does not fit the GPU memory budget: refusing the GPU, loading on the CPU");
        target = ChosenDevice::cpu();
    }
    let start = Instant::now();
    let result = if target.is_cuda() {
        match load(&target.device) {
            Ok(m) => Ok((m, target)),
            Err(e) => {
                tracing::warn!(model = model_name, device = %target.label, error = %e,
                    "loading on the GPU failed: falling back to the CPU");
                metrics.device_errors.with_label_values(&[&target.label, "load"]).inc();
                let cpu = ChosenDevice::cpu();
                load(&cpu.device).map(|m| (m, cpu))
            }
        }
    } else {
        load(&target.device).map(|m| (m, target))
    };
    let (model, device) = result?;
    let secs = start.elapsed().as_secs_f64();
    metrics.model_load_seconds.with_label_values(&[model_name, &device.label]).set(secs);
    tracing::info!(model = model_name, device = %device.label, seconds = secs, "model loaded");
    Ok((model, device))
}

/// Live device state of a service, shown in `/readyz` and in metrics.
#[derive(Debug)]
pub struct DeviceState {
    requested: DeviceSpec,
    active: Mutex<String>,
    primary: Mutex<String>,
    degraded: AtomicBool,
    degraded_reason: Mutex<Option<String>>,
    metrics: Metrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub requested: String,
    pub device: String,
    pub primary_device: String,
    pub degraded: bool,
    pub degraded_reason: Option<String>,
}

impl DeviceState {
    pub fn new(requested: DeviceSpec, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            requested,
            active: Mutex::new("none".into()),
            primary: Mutex::new("none".into()),
            degraded: AtomicBool::new(false),
            degraded_reason: Mutex::new(None),
            metrics,
        })
    }

    /// Record the device the model ended up on.
    pub fn set_active(&self, label: &str) {
        let mut active = self.active.lock().unwrap();
        if *active != "none" {
            self.metrics.device_info.with_label_values(&[&active, &self.requested.to_string()]).set(0);
        }
        *active = label.to_string();
        self.metrics.device_info.with_label_values(&[label, &self.requested.to_string()]).set(1);
    }

    pub fn set_primary(&self, label: &str) {
        *self.primary.lock().unwrap() = label.to_string();
        self.set_active(label);
    }

    pub fn mark_degraded(&self, reason: String) {
        self.degraded.store(true, Ordering::SeqCst);
        self.metrics.degraded.set(1);
        *self.degraded_reason.lock().unwrap() = Some(reason);
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> DeviceStatus {
        DeviceStatus {
            requested: self.requested.to_string(),
            device: self.active.lock().unwrap().clone(),
            primary_device: self.primary.lock().unwrap().clone(),
            degraded: self.is_degraded(),
            degraded_reason: self.degraded_reason.lock().unwrap().clone(),
        }
    }
}

/// The error a simulated device fault produces (`VOICE_FAULT_DEVICE_ERROR_AT`).
#[derive(Debug, thiserror::Error)]
#[error("CUDA_ERROR_LAUNCH_FAILED: simulated device fault (VOICE_FAULT_DEVICE_ERROR_AT)")]
pub struct SimulatedDeviceFault;

/// Does this error come from the GPU (and so deserve a CPU retry)?
pub fn is_device_error(err: &anyhow::Error) -> bool {
    if err.chain().any(|e| e.is::<SimulatedDeviceFault>()) {
        return true;
    }
    let text = format!("{err:#}");
    ["CUDA", "cuda", "cublas", "CUBLAS", "DriverError", "out of memory", "OUT_OF_MEMORY"].iter().any(|needle| text.contains(needle))
}

type Loader<M> = Box<dyn Fn(&Device) -> Result<M> + Send + Sync>;

/// A loaded model plus what is needed to serve a request on the CPU when the GPU fails.
pub struct ModelSlot<M> {
    primary: Arc<M>,
    primary_device: ChosenDevice,
    cpu_copy: OnceLock<Arc<M>>,
    cpu_loader: Loader<M>,
    cpu_load_lock: Mutex<()>,
    state: Arc<DeviceState>,
    runs: AtomicU64,
    fault_at: Option<u64>,
}

impl<M: Send + Sync + 'static> ModelSlot<M> {
    pub fn new(
        primary: M,
        primary_device: ChosenDevice,
        state: Arc<DeviceState>,
        cpu_loader: impl Fn(&Device) -> Result<M> + Send + Sync + 'static,
    ) -> Self {
        state.set_primary(&primary_device.label);
        let fault_at = std::env::var("VOICE_FAULT_DEVICE_ERROR_AT").ok().and_then(|v| v.parse().ok());
        Self {
            primary: Arc::new(primary),
            primary_device,
            cpu_copy: OnceLock::new(),
            cpu_loader: Box::new(cpu_loader),
            cpu_load_lock: Mutex::new(()),
            state,
            runs: AtomicU64::new(0),
            fault_at,
        }
    }

    /// The model on its primary device (for work that never touches the device, e.g. tokenising).
    pub fn primary(&self) -> &Arc<M> {
        &self.primary
    }

    pub fn primary_device(&self) -> &ChosenDevice {
        &self.primary_device
    }

    pub fn state(&self) -> &Arc<DeviceState> {
        &self.state
    }

    fn cpu_model(&self) -> Result<Arc<M>> {
        if let Some(m) = self.cpu_copy.get() {
            return Ok(m.clone());
        }
        let _guard = self.cpu_load_lock.lock().unwrap();
        if let Some(m) = self.cpu_copy.get() {
            return Ok(m.clone());
        }
        tracing::warn!("loading a CPU copy of the model to serve requests after a device failure");
        let m = Arc::new((self.cpu_loader)(&Device::Cpu)?);
        let _ = self.cpu_copy.set(m.clone());
        Ok(m)
    }

    /// Run one request. The closure gets the model and the device it lives on.
    pub fn run<R>(&self, f: impl Fn(&M, &Device) -> Result<R>) -> Result<R> {
        if !self.state.is_degraded() {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            let outcome =
                if self.fault_at == Some(n) { Err(anyhow::Error::new(SimulatedDeviceFault)) } else { f(&self.primary, &self.primary_device.device) };
            match outcome {
                Ok(r) => return Ok(r),
                Err(e) if is_device_error(&e) => {
                    let label = self.primary_device.label.clone();
                    tracing::error!(device = %label, error = %format!("{e:#}"),
                        "device error during a request: marking the service degraded and retrying on the CPU");
                    self.state.metrics.device_errors.with_label_values(&[&label, "request"]).inc();
                    self.state.mark_degraded(format!("{e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
        let cpu = self.cpu_model().map_err(|e| anyhow!("the GPU failed and the CPU copy could not be loaded: {e:#}"))?;
        self.state.set_active("cpu");
        self.state.metrics.cpu_retries.inc();
        f(&cpu, &Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_device_spec() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn budget_refuses_gpu_and_cpu_never_refused() {
        let metrics = Metrics::new("devtest").unwrap();
        // On the CPU the budget does not apply.
        let (m, d) = load_with_fallback(&ChosenDevice::cpu(), "m", 10, 1, &metrics, |_| Ok(5u8)).unwrap();
        assert_eq!((m, d.label.as_str()), (5, "cpu"));
    }

    #[test]
    fn device_errors_are_recognised() {
        assert!(is_device_error(&anyhow::Error::new(SimulatedDeviceFault)));
        assert!(is_device_error(&anyhow!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")")));
        assert!(!is_device_error(&anyhow!("bad input")));
    }

    #[test]
    fn mid_request_fault_retries_on_cpu_and_degrades() {
        let metrics = Metrics::new("slottest").unwrap();
        let state = DeviceState::new(DeviceSpec::Auto, metrics.clone());
        let mut slot = ModelSlot::new(1u32, ChosenDevice::cpu(), state.clone(), |_| Ok(2u32));
        slot.fault_at = Some(2);
        assert_eq!(slot.run(|m, _| Ok(*m)).unwrap(), 1);
        // The 2nd run fails on the primary and is served by the CPU copy.
        assert_eq!(slot.run(|m, _| Ok(*m)).unwrap(), 2);
        assert!(state.status().degraded);
        assert_eq!(metrics.cpu_retries.get(), 1);
        // Later requests stay on the CPU copy.
        assert_eq!(slot.run(|m, _| Ok(*m)).unwrap(), 2);
        // An ordinary error is not retried.
        assert!(slot.run(|_, _| -> Result<u32> { Err(anyhow!("bad input")) }).is_err());
    }
}
