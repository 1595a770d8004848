//! Every backend crate enabled by this crate's cargo features is linked and registered
//! (inventory silently drops crates that nothing references).

use gllm::{builtin_backend_names, link_builtin_backends};
use gllm_runtime::registry::{Origin, Registry};

#[test]
fn every_enabled_backend_is_registered() {
    link_builtin_backends();
    let registry = Registry::builtin();
    let enabled = builtin_backend_names();
    #[cfg(feature = "burn-bert")]
    assert!(enabled.contains(&"burn-bert"));
    #[cfg(feature = "candle-qwen2")]
    assert!(enabled.contains(&"candle-qwen2"));
    #[cfg(feature = "burn-qwen2")]
    assert!(enabled.contains(&"burn-qwen2"));
    for name in &enabled {
        let entry = registry.get(name).unwrap_or_else(|| {
            panic!(
                "backend {name} is enabled but not registered; registered: {:?}",
                registry.names()
            )
        });
        assert_eq!(entry.origin, Origin::BuiltIn);
        let caps = entry.factory.capabilities();
        assert!(
            !caps.tasks.is_empty() && !caps.architectures.is_empty(),
            "{name}: {caps:?}"
        );
    }
}
