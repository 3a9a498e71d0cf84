//! Finds the system's DPDK with pkg-config, builds the C shim over DPDK's
//! static inline functions, and generates the bindings with bindgen.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    let lib = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "error: DPDK 22.11 or newer was not found by pkg-config ({e}).\n\
                 Install it with: apt-get install libdpdk-dev libclang-dev\n\
                 (or build without the `dpdk` feature)."
            );
            std::process::exit(1);
        }
    };
    // DPDK's cflags (-include rte_config.h, -march=...) apply to the shim
    // and to bindgen alike.
    let extra: Vec<String> = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    let mut build = cc::Build::new();
    build.file("src/shim.c").opt_level(3).warnings(false);
    // A function used without its header would return a truncated int.
    build.flag("-Werror=implicit-function-declaration");
    for f in &extra {
        build.flag(f);
    }
    build.compile("vpnfwd_dpdk_shim");

    let mut b = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&extra)
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_openlog_stream")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_lcore_.*")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("rte_lpm_.*")
        .allowlist_function("rte_lpm6_.*")
        .allowlist_function("rte_malloc_.*")
        .allowlist_function("vpnfwd_.*")
        .allowlist_type("rte_eth_conf")
        .allowlist_type("rte_eth_dev_info")
        .allowlist_type("rte_eth_stats")
        .allowlist_type("rte_eth_link")
        .allowlist_type("rte_ether_addr")
        .allowlist_type("rte_lpm_config")
        .allowlist_type("rte_lpm6_config")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("SOCKET_ID_ANY")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false);
    for p in &lib.include_paths {
        b = b.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = match b.generate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "error: generating DPDK bindings failed ({e}).\n\
                 bindgen needs libclang: apt-get install libclang-dev"
            );
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");
    // The PMDs (net_af_packet, net_af_xdp, net_tap, mempool_ring) are
    // plugins EAL loads from its driver directory at start-up.
}
