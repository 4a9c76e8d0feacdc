//! Build script of the end-to-end tests: pam-memscan defines `free` to see each response
//! it hands the module at the moment the module frees it; exporting the symbol makes
//! libpam and the module (loaded with dlopen) call it instead of glibc's.

fn main() {
    println!("cargo:rustc-link-arg-bin=pam-memscan=-Wl,--export-dynamic-symbol=free");
    println!("cargo:rerun-if-changed=build.rs");
}
