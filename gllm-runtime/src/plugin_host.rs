//! Loading backend plugins from shared libraries through the C ABI of
//! [`gllm_api::plugin`]. Libraries are never unloaded (a model from them may be
//! alive anywhere), and every check happens before the first call into a plugin
//! other than its entry point.

use std::ffi::{CStr, c_void};
use std::path::{Path, PathBuf};

use gllm_api::plugin::{
    ABI_MAJOR, ABI_MINOR, ENTRY_SYMBOL, EntryFn, PLUGIN_MAGIC, PluginBuffer, PluginDescriptor,
    PluginInput, PluginModelInfo, PluginVTable, STATUS_OK, Status, abi_compatible,
    capabilities_from_json, device_to_c, info_from_c, spec_to_json, status_kind,
};
use gllm_api::{
    BackendError, BackendFactory, Capabilities, Device, EncodedInput, InferenceBackend, KvCache,
    ModelInfo, ModelSpec,
};

use crate::error::{Result, RuntimeError};
use crate::registry::{BackendEntry, Origin};

fn plugin_err(library: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Plugin {
        library: library.display().to_string(),
        message: message.into(),
    }
}

/// Loads a plugin library and returns its backend, checked and ready to register.
pub fn load_plugin(path: &Path) -> Result<BackendEntry> {
    // SAFETY: loading a library runs its initialisers; plugins are trusted code
    // named by the user's manifest. It is never unloaded.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| plugin_err(path, format!("cannot load: {e}")))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol's type is the documented entry signature.
    let entry: libloading::Symbol<'static, EntryFn> = unsafe { lib.get(ENTRY_SYMBOL.as_bytes()) }
        .map_err(|_| {
            plugin_err(
                path,
                format!("no `{ENTRY_SYMBOL}` symbol: not a gllm plugin (export one with gllm_api::export_plugin!)"),
            )
        })?;
    // SAFETY: calling the documented entry point.
    let desc = unsafe { entry() };
    if desc.is_null() {
        return Err(plugin_err(path, format!("`{ENTRY_SYMBOL}` returned null")));
    }
    // SAFETY: non-null, and the magic is checked before anything else is read.
    let magic = unsafe { std::ptr::read_unaligned(desc as *const u64) };
    if magic != PLUGIN_MAGIC {
        return Err(plugin_err(
            path,
            format!(
                "bad magic {magic:#018x} (expected {PLUGIN_MAGIC:#018x}): not a gllm plugin descriptor"
            ),
        ));
    }
    // SAFETY: the magic says this is a descriptor; the version fields follow it in every ABI.
    let desc: &'static PluginDescriptor = unsafe { &*desc };
    if !abi_compatible(desc.abi_major, desc.abi_minor) {
        return Err(plugin_err(
            path,
            format!(
                "plugin ABI version {}.{} is incompatible with this gllm's ABI {ABI_MAJOR}.{ABI_MINOR} \
                 (the major must be equal and the minor at least the host's); rebuild the plugin against gllm-api {}",
                desc.abi_major,
                desc.abi_minor,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    let text = |p: *const std::ffi::c_char, what: &str| -> Result<String> {
        if p.is_null() {
            return Err(plugin_err(path, format!("descriptor has no {what}")));
        }
        // SAFETY: NUL-terminated strings owned by the library, which is never unloaded.
        unsafe { CStr::from_ptr(p) }
            .to_str()
            .map(str::to_string)
            .map_err(|_| plugin_err(path, format!("descriptor {what} is not UTF-8")))
    };
    let name = text(desc.name, "name")?;
    let version = text(desc.version, "version")?;
    let capabilities = capabilities_from_json(&text(desc.capabilities_json, "capabilities")?)
        .map_err(|m| plugin_err(path, m))?;
    if name.is_empty() {
        return Err(plugin_err(path, "descriptor name is empty"));
    }
    let factory: &'static PluginFactory = Box::leak(Box::new(PluginFactory {
        name,
        version,
        capabilities,
        vtable: &desc.vtable,
        path: path.to_path_buf(),
    }));
    Ok(BackendEntry {
        factory,
        origin: Origin::Plugin(path.to_path_buf()),
    })
}

/// Plugin libraries named by `GLLM_PLUGIN_PATH` (directories separated by `:`):
/// every `.so`/`.dylib`/`.dll` file in them.
pub fn plugin_path_libraries() -> Vec<PathBuf> {
    let Some(var) = std::env::var_os("GLLM_PLUGIN_PATH") else {
        return Vec::new();
    };
    let mut libs = Vec::new();
    for dir in std::env::split_paths(&var) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "so" || e == "dylib" || e == "dll")
            })
            .collect();
        found.sort();
        libs.extend(found);
    }
    libs
}

struct PluginFactory {
    name: String,
    version: String,
    capabilities: Capabilities,
    vtable: &'static PluginVTable,
    path: PathBuf,
}

/// The calling thread's last plugin error, with the status' kind.
fn plugin_error(vt: &PluginVTable, status: Status) -> BackendError {
    let mut buf = vec![0u8; 1024];
    // SAFETY: `buf` has `len` writable bytes.
    let n = unsafe { (vt.last_error)(buf.as_mut_ptr(), buf.len()) };
    if n > buf.len() {
        buf.resize(n, 0);
        // SAFETY: as above, with the full length.
        unsafe { (vt.last_error)(buf.as_mut_ptr(), buf.len()) };
    }
    buf.truncate(n);
    BackendError::new(
        status_kind(status),
        String::from_utf8_lossy(&buf).into_owned(),
    )
}

fn check(vt: &PluginVTable, status: Status) -> std::result::Result<(), BackendError> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(plugin_error(vt, status))
    }
}

impl BackendFactory for PluginFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    fn load(
        &self,
        spec: &ModelSpec,
        device: Device,
    ) -> std::result::Result<Box<dyn InferenceBackend>, BackendError> {
        let json = spec_to_json(spec);
        let (kind, ordinal) = device_to_c(device);
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: the config is passed as pointer + length; `handle` is writable.
        let status =
            unsafe { (self.vtable.create)(json.as_ptr(), json.len(), kind, ordinal, &mut handle) };
        check(self.vtable, status).map_err(|e| {
            BackendError::new(
                e.kind,
                format!(
                    "{} (plugin {} {})",
                    e.message,
                    self.path.display(),
                    self.version
                ),
            )
        })?;
        if handle.is_null() {
            return Err(BackendError::internal("plugin returned a null model"));
        }
        // Owned from here: dropping it destroys the plugin's model.
        let mut model = PluginModel {
            vtable: self.vtable,
            handle,
            info: PluginModelInfo::default(),
        };
        let mut info = PluginModelInfo::default();
        // SAFETY: a live model handle and a writable out pointer.
        check(self.vtable, unsafe {
            (self.vtable.info)(handle, &mut info)
        })?;
        info_from_c(&info)?;
        model.info = info;
        Ok(Box::new(model))
    }
}

struct PluginModel {
    vtable: &'static PluginVTable,
    handle: *mut c_void,
    info: PluginModelInfo,
}

// SAFETY: the plugin contract makes models shareable across threads (like
// InferenceBackend: Send + Sync); caches are used by one thread at a time.
unsafe impl Send for PluginModel {}
unsafe impl Sync for PluginModel {}

impl Drop for PluginModel {
    fn drop(&mut self) {
        // SAFETY: the handle came from `create` and is destroyed once.
        unsafe { (self.vtable.destroy)(self.handle) };
    }
}

impl PluginModel {
    /// Copies a plugin buffer into rows and frees it with the plugin's own free.
    fn take_rows(&self, mut buf: PluginBuffer) -> std::result::Result<Vec<Vec<f32>>, BackendError> {
        let rows = if buf.data.is_null() || buf.rows * buf.cols == 0 {
            vec![Vec::new(); buf.rows]
        } else {
            // SAFETY: the plugin filled `rows * cols` values at `data`.
            let flat = unsafe { std::slice::from_raw_parts(buf.data, buf.rows * buf.cols) };
            flat.chunks(buf.cols).map(<[f32]>::to_vec).collect()
        };
        // SAFETY: freeing the plugin's buffer with the plugin's free.
        unsafe { (self.vtable.free_buffer)(&mut buf) };
        Ok(rows)
    }

    fn run_inputs(
        &self,
        f: unsafe extern "C" fn(
            *mut c_void,
            *const PluginInput,
            usize,
            *mut PluginBuffer,
        ) -> Status,
        inputs: &[EncodedInput],
    ) -> std::result::Result<Vec<Vec<f32>>, BackendError> {
        let raw: Vec<PluginInput> = inputs
            .iter()
            .map(|i| PluginInput {
                ids: i.ids.as_ptr(),
                ids_len: i.ids.len(),
                type_ids: i.type_ids.as_ptr(),
                type_ids_len: i.type_ids.len(),
            })
            .collect();
        let mut buf = PluginBuffer::EMPTY;
        // SAFETY: `raw` borrows `inputs` for the duration of the call.
        check(self.vtable, unsafe {
            f(self.handle, raw.as_ptr(), raw.len(), &mut buf)
        })?;
        let rows = self.take_rows(buf)?;
        if rows.len() != inputs.len() {
            return Err(BackendError::internal(format!(
                "plugin returned {} rows for {} inputs",
                rows.len(),
                inputs.len()
            )));
        }
        Ok(rows)
    }
}

impl InferenceBackend for PluginModel {
    fn info(&self) -> ModelInfo {
        info_from_c(&self.info).unwrap_or(ModelInfo {
            task: gllm_api::Task::Embed,
            device: Device::CPU,
            dtype: gllm_api::DType::F32,
            max_positions: 0,
            vocab_size: 0,
            output_dim: 0,
        })
    }

    fn embed(&self, inputs: &[EncodedInput]) -> std::result::Result<Vec<Vec<f32>>, BackendError> {
        self.run_inputs(self.vtable.embed, inputs)
    }

    fn rerank(&self, pairs: &[EncodedInput]) -> std::result::Result<Vec<Vec<f32>>, BackendError> {
        self.run_inputs(self.vtable.rerank, pairs)
    }

    fn new_cache(&self) -> std::result::Result<Box<dyn KvCache>, BackendError> {
        let mut cache: *mut c_void = std::ptr::null_mut();
        // SAFETY: a live model and a writable out pointer.
        check(self.vtable, unsafe {
            (self.vtable.cache_create)(self.handle, &mut cache)
        })?;
        if cache.is_null() {
            return Err(BackendError::internal("plugin returned a null cache"));
        }
        Ok(Box::new(PluginCache {
            vtable: self.vtable,
            model: self.handle as usize,
            handle: cache,
        }))
    }

    fn forward(
        &self,
        cache: &mut dyn KvCache,
        tokens: &[u32],
    ) -> std::result::Result<Vec<f32>, BackendError> {
        let cache = gllm_api::downcast_cache::<PluginCache>(cache)?;
        if cache.model != self.handle as usize {
            return Err(BackendError::invalid_input(
                "KV cache was created by another plugin model",
            ));
        }
        let mut buf = PluginBuffer::EMPTY;
        // SAFETY: live handles; `tokens` borrowed for the call.
        check(self.vtable, unsafe {
            (self.vtable.forward)(
                self.handle,
                cache.handle,
                tokens.as_ptr(),
                tokens.len(),
                &mut buf,
            )
        })?;
        self.take_rows(buf)?
            .into_iter()
            .next()
            .ok_or_else(|| BackendError::internal("plugin returned no logits"))
    }
}

struct PluginCache {
    vtable: &'static PluginVTable,
    model: usize,
    handle: *mut c_void,
}

// SAFETY: a cache is used by one thread at a time (KvCache: Send, not Sync).
unsafe impl Send for PluginCache {}

impl Drop for PluginCache {
    fn drop(&mut self) {
        // SAFETY: made by cache_create, freed once.
        unsafe { (self.vtable.cache_free)(self.handle) };
    }
}

impl KvCache for PluginCache {
    fn len(&self) -> usize {
        // SAFETY: a live cache handle.
        unsafe { (self.vtable.cache_len)(self.handle) }
    }

    fn truncate(&mut self, len: usize) -> std::result::Result<(), BackendError> {
        // SAFETY: a live cache handle.
        check(self.vtable, unsafe {
            (self.vtable.truncate)(self.handle, len)
        })
    }
}
