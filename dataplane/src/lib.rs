//! vpnfwd's forwarding plane.
//!
//! - [`wire`]: zero-copy views of the headers on the path.
//! - [`rcu`]: quiescent-state-based reclamation for the one-writer,
//!   many-reader forwarding tables.
//! - [`fib`]: ports, per-VRF IPv4/IPv6 longest-prefix match, nexthops and
//!   the MPLS label table.
//! - [`pipeline`]: classify → lookup → rewrite over bursts of packets.
//! - [`io`]: packet buffers and port back-ends.

pub mod fib;
pub mod io;
pub mod pipeline;
pub mod rcu;
pub mod slab;
pub mod wire;
pub mod worker;

/// Check that this CPU has the instruction-set extensions the binary was
/// built for (see `.cargo/config.toml`), so that a build for a newer CPU
/// stops with a message instead of an illegal-instruction signal. Call it
/// first thing in `main`.
///
/// # Errors
/// Names the missing extensions and how to rebuild.
pub fn check_cpu() -> Result<(), String> {
    #[allow(unused_mut)]
    let mut missing: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! need {
            ($($f:tt),*) => {$(
                if cfg!(target_feature = $f) && !std::arch::is_x86_feature_detected!($f) {
                    missing.push($f);
                }
            )*};
        }
        need!("sse4.2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "lzcnt", "fma", "movbe");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this CPU lacks {} which this build uses; rebuild with \
             RUSTFLAGS=\"-C target-cpu=native\" (or x86-64-v2)",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_build_machine_runs_its_own_build() {
        assert_eq!(super::check_cpu(), Ok(()));
    }
}
