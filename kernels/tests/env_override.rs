//! LCKV_KERNELS overrides the detected path (its own test binary: the variable and the
//! process-wide choice are global).

use lckv_kernels::{kernels, kernels_from_env, KernelPath};

#[test]
fn env_variable_selects_or_reports() {
    std::env::set_var("LCKV_KERNELS", "bogus");
    let e = kernels_from_env()
        .err()
        .expect("an unknown path must be an error");
    assert!(e.contains("LCKV_KERNELS") && e.contains("scalar"), "{e}");

    // A path this CPU lacks (there is always one: x86 has no NEON, aarch64 no AVX2).
    let missing = KernelPath::ALL
        .into_iter()
        .find(|p| !p.cpu_supports())
        .unwrap();
    std::env::set_var("LCKV_KERNELS", missing.name());
    let e = kernels_from_env()
        .err()
        .expect("an unsupported path must be an error");
    assert!(e.contains(missing.name()), "{e}");

    std::env::set_var("LCKV_KERNELS", " Scalar ");
    assert_eq!(kernels_from_env().unwrap().path(), KernelPath::Scalar);
    // The process-wide choice is made once, from the variable as it is at first use.
    assert_eq!(kernels().path(), KernelPath::Scalar);
    std::env::set_var("LCKV_KERNELS", "");
    assert_eq!(kernels().path(), KernelPath::Scalar);
    assert!(kernels_from_env().unwrap().path().cpu_supports());
}
