//! The plugin C ABI: backends shipped as shared libraries (`.so`/`.dylib`/`.dll`)
//! that a stock `gllm` loads at run time.
//!
//! `inventory` cannot cross a shared-library boundary and Rust's ABI is not
//! stable across compilers, so only plain C data crosses here: `#[repr(C)]`
//! structs, `extern "C"` function pointers, pointers + lengths, integers,
//! NUL-terminated UTF-8 strings, and JSON for configuration.
//!
//! ## Contract
//! - The library exports [`ENTRY_SYMBOL`] (`gllm_plugin_entry`), an
//!   `extern "C" fn() -> *const PluginDescriptor` returning a descriptor that
//!   lives as long as the library.
//! - The host checks [`PluginDescriptor::magic`] and the ABI version before
//!   any other call: the major must equal [`ABI_MAJOR`], the minor must be at
//!   least [`ABI_MINOR`].
//! - Every vtable function returns a [`Status`]: 0 for success, else an
//!   [`crate::ErrorKind`] code; the message is fetched with `last_error`.
//! - Whoever allocates frees: buffers returned by the plugin are released with
//!   its `free_buffer`, models with `destroy`, caches with `cache_free`. Inputs
//!   are borrowed from the host for the duration of one call.
//! - No panic crosses the boundary: the adapter of [`export_plugin!`] runs every
//!   entry point under `catch_unwind` and turns a panic into [`crate::ErrorKind::Internal`].
//!
//! ## Versioning policy
//! [`ABI_MAJOR`] changes when a struct layout or a function signature changes;
//! [`ABI_MINOR`] when something is appended that old hosts can ignore. A host
//! refuses plugins of another major, and plugins older (smaller minor) than itself.
//!
//! ## Writing a plugin
//! Implement [`crate::BackendFactory`] and [`crate::InferenceBackend`] as for a
//! built-in backend, build a `cdylib`, and export the factory:
//! ```text
//! static FACTORY: MyFactory = MyFactory;
//! gllm_api::export_plugin!(FACTORY);
//! ```

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use crate::{
    BackendError, BackendFactory, Capabilities, DType, Device, DeviceKind, EncodedInput, ErrorKind,
    InferenceBackend, KvCache, ModelInfo, ModelSpec, Task, WeightFormat,
};

/// The symbol every plugin exports.
pub const ENTRY_SYMBOL: &str = "gllm_plugin_entry";
/// `b"gllmplug"` as a little-endian u64: the first field of every descriptor.
pub const PLUGIN_MAGIC: u64 = u64::from_le_bytes(*b"gllmplug");
/// ABI major version: layouts and signatures.
pub const ABI_MAJOR: u32 = 1;
/// ABI minor version: additions old hosts may ignore.
pub const ABI_MINOR: u32 = 0;

/// True when a host of this ABI may load a plugin built for `major.minor`: the
/// majors are equal and the plugin's minor is at least the host's.
pub fn abi_compatible(major: u32, minor: u32) -> bool {
    major == ABI_MAJOR && minor.checked_sub(ABI_MINOR).is_some()
}

/// 0 = success, else an [`ErrorKind`] code.
pub type Status = u32;
/// [`Status`] of success.
pub const STATUS_OK: Status = 0;

/// Signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

/// What a plugin library describes itself as.
#[repr(C)]
pub struct PluginDescriptor {
    /// Must be [`PLUGIN_MAGIC`].
    pub magic: u64,
    /// The plugin's ABI major version.
    pub abi_major: u32,
    /// The plugin's ABI minor version.
    pub abi_minor: u32,
    /// Backend name (NUL-terminated UTF-8, static).
    pub name: *const c_char,
    /// Plugin version (NUL-terminated UTF-8, static).
    pub version: *const c_char,
    /// Capabilities as JSON: `{"tasks": [...], "architectures": [...], "formats": [...], "devices": [...]}`.
    pub capabilities_json: *const c_char,
    /// The entry points.
    pub vtable: PluginVTable,
}

// SAFETY: the descriptor only holds pointers to static, immutable data and functions.
unsafe impl Sync for PluginDescriptor {}
unsafe impl Send for PluginDescriptor {}

/// One borrowed input (token ids and segment ids).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PluginInput {
    /// Token ids.
    pub ids: *const u32,
    /// Number of token ids.
    pub ids_len: usize,
    /// Segment ids (may be null when `type_ids_len` is 0).
    pub type_ids: *const u32,
    /// Number of segment ids (0 = all zeros).
    pub type_ids_len: usize,
}

/// A matrix of f32 owned by the plugin; the host copies it, then calls `free_buffer`.
#[repr(C)]
pub struct PluginBuffer {
    /// Row-major values.
    pub data: *mut f32,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Allocation capacity (for the plugin's own bookkeeping).
    pub capacity: usize,
}

impl PluginBuffer {
    /// An empty buffer (nothing to free).
    pub const EMPTY: PluginBuffer = PluginBuffer {
        data: std::ptr::null_mut(),
        rows: 0,
        cols: 0,
        capacity: 0,
    };
}

/// What a loaded model reports ([`ModelInfo`] in C form).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PluginModelInfo {
    /// [`Task`]: 0 embed, 1 rerank, 2 generate.
    pub task: u32,
    /// [`DeviceKind`]: 0 cpu, 1 gpu.
    pub device_kind: u32,
    /// GPU ordinal.
    pub device_ordinal: u32,
    /// [`DType`]: 0 f32, 1 f16, 2 bf16.
    pub dtype: u32,
    /// Most positions per input or cache.
    pub max_positions: usize,
    /// Input vocabulary size.
    pub vocab_size: usize,
    /// Length of one output row.
    pub output_dim: usize,
}

/// The plugin's entry points. `model` and `cache` are opaque handles made by the plugin.
#[repr(C)]
pub struct PluginVTable {
    /// Loads a model from a JSON config (see [`spec_to_json`]) on a device; writes the handle to `out_model`.
    pub create: unsafe extern "C" fn(
        config_json: *const u8,
        config_len: usize,
        device_kind: u32,
        device_ordinal: u32,
        out_model: *mut *mut c_void,
    ) -> Status,
    /// Frees a model.
    pub destroy: unsafe extern "C" fn(model: *mut c_void),
    /// Describes a model.
    pub info: unsafe extern "C" fn(model: *mut c_void, out: *mut PluginModelInfo) -> Status,
    /// Pooled embeddings: one row per input.
    pub embed: unsafe extern "C" fn(
        model: *mut c_void,
        inputs: *const PluginInput,
        count: usize,
        out: *mut PluginBuffer,
    ) -> Status,
    /// Cross-encoder logits: one row per pair.
    pub rerank: unsafe extern "C" fn(
        model: *mut c_void,
        inputs: *const PluginInput,
        count: usize,
        out: *mut PluginBuffer,
    ) -> Status,
    /// A new KV cache for one sequence.
    pub cache_create:
        unsafe extern "C" fn(model: *mut c_void, out_cache: *mut *mut c_void) -> Status,
    /// Frees a KV cache.
    pub cache_free: unsafe extern "C" fn(cache: *mut c_void),
    /// Positions a cache holds.
    pub cache_len: unsafe extern "C" fn(cache: *mut c_void) -> usize,
    /// Keeps the first `len` positions of a cache.
    pub truncate: unsafe extern "C" fn(cache: *mut c_void, len: usize) -> Status,
    /// Appends tokens to a cache; writes the last position's logits (one row).
    pub forward: unsafe extern "C" fn(
        model: *mut c_void,
        cache: *mut c_void,
        tokens: *const u32,
        count: usize,
        out: *mut PluginBuffer,
    ) -> Status,
    /// Frees a buffer the plugin returned.
    pub free_buffer: unsafe extern "C" fn(buffer: *mut PluginBuffer),
    /// Copies the calling thread's last error message (UTF-8, no NUL) into `buf`
    /// (at most `cap` bytes) and returns its full length.
    pub last_error: unsafe extern "C" fn(buf: *mut u8, cap: usize) -> usize,
}

// ---------------------------------------------------------------- conversions shared by both sides

/// The JSON config a plugin's `create` receives for a model spec.
pub fn spec_to_json(spec: &ModelSpec) -> String {
    serde_json::json!({
        "id": spec.id,
        "task": spec.task,
        "path": spec.path,
        "format": spec.format,
        "architecture": spec.architecture,
        "dtype": spec.dtype,
        "options": spec.options,
    })
    .to_string()
}

/// Parses what [`spec_to_json`] wrote.
pub fn spec_from_json(json: &str) -> Result<ModelSpec, BackendError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        id: String,
        task: Task,
        path: std::path::PathBuf,
        format: WeightFormat,
        architecture: String,
        dtype: Option<DType>,
        #[serde(default)]
        options: std::collections::BTreeMap<String, String>,
    }
    let r: Raw = serde_json::from_str(json)
        .map_err(|e| BackendError::invalid_input(format!("plugin model config: {e}")))?;
    Ok(ModelSpec {
        id: r.id,
        task: r.task,
        path: r.path,
        format: r.format,
        architecture: r.architecture,
        dtype: r.dtype,
        options: r.options,
    })
}

/// Capabilities as the descriptor's JSON.
pub fn capabilities_to_json(c: &Capabilities) -> String {
    serde_json::json!({
        "tasks": c.tasks,
        "architectures": c.architectures,
        "formats": c.formats,
        "devices": c.devices,
    })
    .to_string()
}

/// Parses the descriptor's capabilities JSON.
pub fn capabilities_from_json(json: &str) -> Result<Capabilities, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        tasks: Vec<Task>,
        architectures: Vec<String>,
        formats: Vec<WeightFormat>,
        devices: Vec<DeviceKind>,
    }
    let r: Raw = serde_json::from_str(json).map_err(|e| format!("capabilities JSON: {e}"))?;
    Ok(Capabilities {
        tasks: r.tasks,
        architectures: r.architectures,
        formats: r.formats,
        devices: r.devices,
    })
}

fn task_code(t: Task) -> u32 {
    match t {
        Task::Embed => 0,
        Task::Rerank => 1,
        Task::Generate => 2,
    }
}

fn dtype_code(d: DType) -> u32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Bf16 => 2,
    }
}

/// [`ModelInfo`] from its C form.
pub fn info_from_c(i: &PluginModelInfo) -> Result<ModelInfo, BackendError> {
    let task = match i.task {
        0 => Task::Embed,
        1 => Task::Rerank,
        2 => Task::Generate,
        t => {
            return Err(BackendError::internal(format!(
                "plugin reported task code {t}"
            )));
        }
    };
    let dtype = match i.dtype {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Bf16,
        d => {
            return Err(BackendError::internal(format!(
                "plugin reported dtype code {d}"
            )));
        }
    };
    Ok(ModelInfo {
        task,
        device: device_from_c(i.device_kind, i.device_ordinal)?,
        dtype,
        max_positions: i.max_positions,
        vocab_size: i.vocab_size,
        output_dim: i.output_dim,
    })
}

/// [`Device`] in C form: (kind, ordinal).
pub fn device_to_c(d: Device) -> (u32, u32) {
    match d.kind {
        DeviceKind::Cpu => (0, 0),
        DeviceKind::Gpu => (1, d.ordinal as u32),
    }
}

/// [`Device`] from its C form.
pub fn device_from_c(kind: u32, ordinal: u32) -> Result<Device, BackendError> {
    match kind {
        0 => Ok(Device::CPU),
        1 => Ok(Device::gpu(ordinal as usize)),
        k => Err(BackendError::invalid_input(format!("device kind code {k}"))),
    }
}

// ---------------------------------------------------------------- the plugin side: export adapter

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

static EXPORTED: OnceLock<&'static dyn BackendFactory> = OnceLock::new();

/// Builds the descriptor of a plugin exporting `factory`. Used by [`export_plugin!`].
#[doc(hidden)]
pub fn __descriptor(
    factory: &'static dyn BackendFactory,
    version: &str,
) -> *const PluginDescriptor {
    static DESCRIPTOR: OnceLock<Box<PluginDescriptor>> = OnceLock::new();
    let _ = EXPORTED.set(factory);
    let d = DESCRIPTOR.get_or_init(|| {
        let leak = |s: String| -> *const c_char {
            let c = std::ffi::CString::new(s.replace('\0', " ")).unwrap_or_default();
            c.into_raw() as *const c_char
        };
        Box::new(PluginDescriptor {
            magic: PLUGIN_MAGIC,
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            name: leak(factory.name().to_string()),
            version: leak(version.to_string()),
            capabilities_json: leak(capabilities_to_json(&factory.capabilities())),
            vtable: export::VTABLE,
        })
    });
    &**d as *const PluginDescriptor
}

/// Exports a static [`BackendFactory`] as this library's plugin entry point.
#[macro_export]
macro_rules! export_plugin {
    ($factory:path) => {
        /// The gllm plugin entry point.
        #[unsafe(no_mangle)]
        pub extern "C" fn gllm_plugin_entry() -> *const $crate::plugin::PluginDescriptor {
            $crate::plugin::__descriptor(&$factory, env!("CARGO_PKG_VERSION"))
        }
    };
}

mod export {
    use super::*;

    pub(super) const VTABLE: PluginVTable = PluginVTable {
        create,
        destroy,
        info,
        embed,
        rerank,
        cache_create,
        cache_free,
        cache_len,
        truncate,
        forward,
        free_buffer,
        last_error,
    };

    struct Model(Box<dyn InferenceBackend>);
    struct Cache(Box<dyn KvCache>);

    /// Runs `f`, catching panics, recording the error message, returning a status.
    fn guard(f: impl FnOnce() -> Result<(), BackendError>) -> Status {
        let result = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(BackendError::internal(format!("plugin panicked: {msg}")))
            }
        };
        match result {
            Ok(()) => STATUS_OK,
            Err(e) => {
                let code = e.kind as u32;
                LAST_ERROR.with(|l| *l.borrow_mut() = e.message);
                code
            }
        }
    }

    fn null_check<T>(p: *const T, what: &str) -> Result<(), BackendError> {
        if p.is_null() {
            Err(BackendError::invalid_input(format!("{what} is null")))
        } else {
            Ok(())
        }
    }

    /// # Safety
    /// `inputs` must point to `count` valid inputs whose pointers are valid for their lengths.
    unsafe fn read_inputs(
        inputs: *const PluginInput,
        count: usize,
    ) -> Result<Vec<EncodedInput>, BackendError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        null_check(inputs, "inputs")?;
        // SAFETY: the caller guarantees `count` inputs.
        let raw = unsafe { std::slice::from_raw_parts(inputs, count) };
        raw.iter()
            .map(|i| {
                let ids = if i.ids_len == 0 {
                    Vec::new()
                } else {
                    null_check(i.ids, "ids")?;
                    // SAFETY: the caller guarantees `ids_len` ids.
                    unsafe { std::slice::from_raw_parts(i.ids, i.ids_len) }.to_vec()
                };
                let type_ids = if i.type_ids_len == 0 {
                    Vec::new()
                } else {
                    null_check(i.type_ids, "type_ids")?;
                    // SAFETY: as above.
                    unsafe { std::slice::from_raw_parts(i.type_ids, i.type_ids_len) }.to_vec()
                };
                Ok(EncodedInput { ids, type_ids })
            })
            .collect()
    }

    fn write_rows(rows: Vec<Vec<f32>>, out: *mut PluginBuffer) -> Result<(), BackendError> {
        null_check(out, "out")?;
        let cols = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != cols) {
            return Err(BackendError::internal("ragged output rows"));
        }
        let n = rows.len();
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        let mut flat = std::mem::ManuallyDrop::new(flat);
        // SAFETY: `out` is non-null and points to a buffer the host owns.
        unsafe {
            *out = PluginBuffer {
                data: flat.as_mut_ptr(),
                rows: n,
                cols,
                capacity: flat.capacity(),
            };
        }
        Ok(())
    }

    /// # Safety
    /// `model` must be a handle made by `create` and not yet destroyed.
    unsafe fn model<'a>(model: *mut c_void) -> Result<&'a Model, BackendError> {
        null_check(model, "model")?;
        // SAFETY: per the contract.
        Ok(unsafe { &*(model as *const Model) })
    }

    unsafe extern "C" fn create(
        config_json: *const u8,
        config_len: usize,
        device_kind: u32,
        device_ordinal: u32,
        out_model: *mut *mut c_void,
    ) -> Status {
        guard(|| {
            null_check(config_json, "config")?;
            null_check(out_model, "out_model")?;
            let factory = EXPORTED
                .get()
                .ok_or_else(|| BackendError::internal("plugin entry point was not called"))?;
            // SAFETY: the host passes `config_len` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(config_json, config_len) };
            let json = std::str::from_utf8(bytes)
                .map_err(|e| BackendError::invalid_input(format!("config is not UTF-8: {e}")))?;
            let spec = spec_from_json(json)?;
            let device = device_from_c(device_kind, device_ordinal)?;
            let backend = factory.load(&spec, device)?;
            let handle = Box::into_raw(Box::new(Model(backend)));
            // SAFETY: checked non-null above.
            unsafe { *out_model = handle as *mut c_void };
            Ok(())
        })
    }

    unsafe extern "C" fn destroy(model: *mut c_void) {
        if !model.is_null() {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: made by `create` through Box::into_raw, destroyed once.
                drop(unsafe { Box::from_raw(model as *mut Model) })
            }));
        }
    }

    unsafe extern "C" fn info(model: *mut c_void, out: *mut PluginModelInfo) -> Status {
        guard(|| {
            null_check(out, "out")?;
            // SAFETY: per the contract.
            let m = unsafe { self::model(model)? };
            let i = m.0.info();
            let (device_kind, device_ordinal) = device_to_c(i.device);
            // SAFETY: checked non-null.
            unsafe {
                *out = PluginModelInfo {
                    task: task_code(i.task),
                    device_kind,
                    device_ordinal,
                    dtype: dtype_code(i.dtype),
                    max_positions: i.max_positions,
                    vocab_size: i.vocab_size,
                    output_dim: i.output_dim,
                }
            };
            Ok(())
        })
    }

    unsafe extern "C" fn embed(
        model: *mut c_void,
        inputs: *const PluginInput,
        count: usize,
        out: *mut PluginBuffer,
    ) -> Status {
        guard(|| {
            // SAFETY: per the contract.
            let (m, inputs) = unsafe { (self::model(model)?, read_inputs(inputs, count)?) };
            write_rows(m.0.embed(&inputs)?, out)
        })
    }

    unsafe extern "C" fn rerank(
        model: *mut c_void,
        inputs: *const PluginInput,
        count: usize,
        out: *mut PluginBuffer,
    ) -> Status {
        guard(|| {
            // SAFETY: per the contract.
            let (m, inputs) = unsafe { (self::model(model)?, read_inputs(inputs, count)?) };
            write_rows(m.0.rerank(&inputs)?, out)
        })
    }

    unsafe extern "C" fn cache_create(model: *mut c_void, out_cache: *mut *mut c_void) -> Status {
        guard(|| {
            null_check(out_cache, "out_cache")?;
            // SAFETY: per the contract.
            let m = unsafe { self::model(model)? };
            let cache = Box::into_raw(Box::new(Cache(m.0.new_cache()?)));
            // SAFETY: checked non-null.
            unsafe { *out_cache = cache as *mut c_void };
            Ok(())
        })
    }

    unsafe extern "C" fn cache_free(cache: *mut c_void) {
        if !cache.is_null() {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: made by `cache_create`, freed once.
                drop(unsafe { Box::from_raw(cache as *mut Cache) })
            }));
        }
    }

    unsafe extern "C" fn cache_len(cache: *mut c_void) -> usize {
        if cache.is_null() {
            return 0;
        }
        // SAFETY: made by `cache_create`.
        catch_unwind(AssertUnwindSafe(|| {
            unsafe { &*(cache as *const Cache) }.0.len()
        }))
        .unwrap_or(0)
    }

    unsafe extern "C" fn truncate(cache: *mut c_void, len: usize) -> Status {
        guard(|| {
            null_check(cache, "cache")?;
            // SAFETY: made by `cache_create`; the host uses a cache from one thread at a time.
            let c = unsafe { &mut *(cache as *mut Cache) };
            c.0.truncate(len)
        })
    }

    unsafe extern "C" fn forward(
        model: *mut c_void,
        cache: *mut c_void,
        tokens: *const u32,
        count: usize,
        out: *mut PluginBuffer,
    ) -> Status {
        guard(|| {
            null_check(cache, "cache")?;
            null_check(tokens, "tokens")?;
            // SAFETY: per the contract: valid handles, `count` tokens, one user of the cache.
            let (m, c, t) = unsafe {
                (
                    self::model(model)?,
                    &mut *(cache as *mut Cache),
                    std::slice::from_raw_parts(tokens, count),
                )
            };
            let logits = m.0.forward(c.0.as_mut(), t)?;
            write_rows(vec![logits], out)
        })
    }

    unsafe extern "C" fn free_buffer(buffer: *mut PluginBuffer) {
        if buffer.is_null() {
            return;
        }
        // SAFETY: `buffer` was filled by `write_rows` of this library.
        let b = unsafe { &mut *buffer };
        if !b.data.is_null() {
            // SAFETY: data/len/capacity come from a Vec<f32> of this allocator.
            drop(unsafe { Vec::from_raw_parts(b.data, b.rows * b.cols, b.capacity) });
        }
        *b = PluginBuffer::EMPTY;
    }

    unsafe extern "C" fn last_error(buf: *mut u8, cap: usize) -> usize {
        LAST_ERROR.with(|l| {
            let msg = l.borrow();
            let n = msg.len().min(cap);
            if !buf.is_null() && n > 0 {
                // SAFETY: the host gives `cap` writable bytes.
                unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), buf, n) };
            }
            msg.len()
        })
    }
}

/// The [`ErrorKind`] of a non-zero status (unknown codes are internal errors), for hosts.
pub fn status_kind(status: Status) -> ErrorKind {
    ErrorKind::from_code(status).unwrap_or(ErrorKind::Internal)
}
