//! Generates the Rust side of the two canonical C headers with bindgen.

use std::{env, path::PathBuf};

fn main() {
    let here = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    for h in ["wrapper.h", "vgpu_svm_protocol.h", "vgpu_svm_drm.h"] {
        println!("cargo:rerun-if-changed={}", here.join(h).display());
    }
    let bindings = bindgen::Builder::default()
        .header(here.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", here.display()))
        // drm.h: libdrm-dev ships the kernel's DRM UAPI headers here.
        .clang_arg("-I/usr/include/libdrm")
        .allowlist_file(".*vgpu_svm_(protocol|drm)\\.h")
        .allowlist_var("DRM_COMMAND_BASE")
        .allowlist_var("VGPU_UAPI_IOCTL_.*")
        .use_core()
        .derive_default(true)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "bindgen failed on uapi/wrapper.h: {e}\n\
                 (needs libclang and libdrm-dev: run `cargo xtask setup`)"
            )
        });
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(&out).expect("write bindings.rs");
}
