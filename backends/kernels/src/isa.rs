//! Which SIMD kernels this CPU runs, detected once at run time.

/// An instruction-set level with its own kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, the reference for the others.
    Scalar,
    /// AVX2 + FMA + F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (used on 256-bit registers), with AVX2 + FMA + F16C.
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Isa {
    /// The best level this CPU supports (`GLLM_KERNELS=scalar|avx2` caps it, for
    /// comparisons and for testing the portable path on a machine that has more).
    pub fn detect() -> Self {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = std::env::var("GLLM_KERNELS").unwrap_or_default();
            let best = Self::hardware();
            match cap.as_str() {
                "scalar" => Isa::Scalar,
                #[cfg(target_arch = "x86_64")]
                "avx2" if best != Isa::Scalar => Isa::Avx2,
                _ => best,
            }
        })
    }

    fn hardware() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Isa::Vnni;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every level this CPU can run, scalar first (for tests that compare them).
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut out = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let best = Self::hardware();
            if best != Isa::Scalar {
                out.push(Isa::Avx2);
            }
            if best == Isa::Vnni {
                out.push(Isa::Vnni);
            }
        }
        out
    }
}
