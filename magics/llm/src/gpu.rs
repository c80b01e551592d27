//! GPU discovery for `%gpu` and `ferrolab gpu`: devices, memory and utilisation.
//!
//! Without `--features cuda`, the CUDA driver (through cudarc) and NVML are opened at
//! run time, so every build answers — one without CUDA, or on a machine without a
//! GPU, says "no CUDA device found" and why. A `--features cuda` build links the
//! driver library (candle's choice), so it starts only where the driver is installed.

use cudarc::driver::{result, sys};
use serde::Serialize;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

#[derive(Debug, Clone, Serialize)]
pub struct GpuDevice {
    pub index: usize,
    pub name: String,
    pub compute_capability: String,
    pub pci_bus_id: String,
    pub total_mib: u64,
    /// From NVML, when it is installed.
    pub used_mib: Option<u64>,
    pub utilisation_percent: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    pub devices: Vec<GpuDevice>,
    /// Why there are none, when there are none.
    pub reason: Option<String>,
    pub driver_version: Option<String>,
    /// Whether this build can train and run models on CUDA (`--features cuda`).
    pub cuda_build: bool,
}

impl GpuReport {
    pub fn text(&self) -> String {
        let build = if self.cuda_build {
            "this build runs models on CUDA"
        } else {
            "this build runs models on the CPU only (build with --features cuda for GPUs)"
        };
        if self.devices.is_empty() {
            return format!(
                "no CUDA device found ({}); {build}",
                self.reason.as_deref().unwrap_or("none reported")
            );
        }
        let mut lines = vec![format!(
            "{} CUDA device(s), driver {}; {build}",
            self.devices.len(),
            self.driver_version.as_deref().unwrap_or("?")
        )];
        for d in &self.devices {
            let used = match (d.used_mib, d.utilisation_percent) {
                (Some(used), Some(util)) => {
                    format!("{used} / {} MiB used, {util}% busy", d.total_mib)
                }
                _ => format!("{} MiB (usage needs NVML)", d.total_mib),
            };
            lines.push(format!(
                "  cuda:{}  {}  (compute {}, {})  {used}",
                d.index, d.name, d.compute_capability, d.pci_bus_id
            ));
        }
        lines.join("\n")
    }
}

/// What the machine has. Never fails: problems become the report's `reason`.
pub fn report() -> GpuReport {
    let cuda_build = candle_core::utils::cuda_is_available();
    let mut report = GpuReport {
        devices: Vec::new(),
        reason: None,
        driver_version: None,
        cuda_build,
    };
    if !driver_present() {
        report.reason = Some("the CUDA driver library (libcuda) is not installed".into());
        return report;
    }
    if let Err(e) = result::init() {
        report.reason = Some(format!("the CUDA driver did not initialise: {e}"));
        return report;
    }
    let mut version: c_int = 0;
    // SAFETY: the driver is initialised and `version` outlives the call.
    if unsafe { sys::cuDriverGetVersion(&mut version) } == sys::CUresult::CUDA_SUCCESS {
        report.driver_version = Some(format!("{}.{}", version / 1000, version % 1000 / 10));
    }
    let count = match result::device::get_count() {
        Ok(n) => n,
        Err(e) => {
            report.reason = Some(format!("the CUDA driver cannot count devices: {e}"));
            return report;
        }
    };
    if count == 0 {
        report.reason = Some("the CUDA driver sees no device".into());
        return report;
    }
    let nvml = Nvml::open();
    for index in 0..count {
        let Ok(dev) = result::device::get(index) else {
            continue;
        };
        let name = result::device::get_name(dev).unwrap_or_else(|_| "unknown".into());
        // SAFETY: `dev` is a valid device handle from the initialised driver.
        let total = unsafe { result::device::total_mem(dev) }.unwrap_or(0) as u64;
        let (mut major, mut minor) = (0, 0);
        // SAFETY: as above; the out-pointers are live locals.
        unsafe { sys::cuDeviceComputeCapability(&mut major, &mut minor, dev) };
        let mut bus = [0 as c_char; 32];
        // SAFETY: the buffer is 32 bytes, as passed.
        let pci = if unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), bus.len() as c_int, dev) }
            == sys::CUresult::CUDA_SUCCESS
        {
            // SAFETY: the driver wrote a NUL-terminated string into `bus`.
            unsafe { CStr::from_ptr(bus.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let usage = nvml.as_ref().and_then(|n| n.usage(&bus));
        report.devices.push(GpuDevice {
            index: index as usize,
            name,
            compute_capability: format!("{major}.{minor}"),
            pci_bus_id: pci,
            total_mib: total / (1024 * 1024),
            used_mib: usage.map(|u| u.0 / (1024 * 1024)),
            utilisation_percent: usage.map(|u| u.1),
        });
    }
    report
}

/// Whether the CUDA driver library can be opened. A `--features cuda` build links
/// it (candle links cudarc to the toolkit), so it is there if the program started.
#[cfg(feature = "cuda")]
fn driver_present() -> bool {
    true
}

#[cfg(not(feature = "cuda"))]
fn driver_present() -> bool {
    // SAFETY: only checks whether the driver library can be opened.
    unsafe { sys::is_culib_present() }
}

/// The few NVML calls `%gpu` needs, looked up at run time.
struct Nvml {
    _lib: libloading::Library,
    by_bus: unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int,
    memory: unsafe extern "C" fn(*mut c_void, *mut NvmlMemory) -> c_int,
    utilisation: unsafe extern "C" fn(*mut c_void, *mut NvmlUtilisation) -> c_int,
}

#[repr(C)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

#[repr(C)]
struct NvmlUtilisation {
    gpu: c_uint,
    memory: c_uint,
}

impl Nvml {
    fn open() -> Option<Nvml> {
        // SAFETY: loading NVML runs its initialisers only; the symbols are looked up
        // with the signatures NVML documents.
        unsafe {
            let lib = libloading::Library::new("libnvidia-ml.so.1").ok()?;
            let init: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
                lib.get(b"nvmlInit_v2\0").ok()?;
            if init() != 0 {
                return None;
            }
            let by_bus = *lib.get(b"nvmlDeviceGetHandleByPciBusId_v2\0").ok()?;
            let memory = *lib.get(b"nvmlDeviceGetMemoryInfo\0").ok()?;
            let utilisation = *lib.get(b"nvmlDeviceGetUtilizationRates\0").ok()?;
            Some(Nvml {
                _lib: lib,
                by_bus,
                memory,
                utilisation,
            })
        }
    }

    /// (used bytes, GPU utilisation %) of the device on this PCI bus.
    fn usage(&self, bus: &[c_char]) -> Option<(u64, u32)> {
        // SAFETY: `bus` is NUL-terminated; the out-structs match NVML's layouts.
        unsafe {
            let mut handle = std::ptr::null_mut();
            if (self.by_bus)(bus.as_ptr(), &mut handle) != 0 {
                return None;
            }
            let mut memory = NvmlMemory {
                total: 0,
                free: 0,
                used: 0,
            };
            let mut util = NvmlUtilisation { gpu: 0, memory: 0 };
            if (self.memory)(handle, &mut memory) != 0 || (self.utilisation)(handle, &mut util) != 0
            {
                return None;
            }
            Some((memory.used, util.gpu))
        }
    }
}
