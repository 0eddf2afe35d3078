//! afl target `edf`: feeds each input to [`pyxis_fuzz::edf`], whose assertions are the
//! invariants (docs/fuzzing.md). Built and run by tests/fuzz/run.sh.
fn main() {
    afl::fuzz!(|data: &[u8]| pyxis_fuzz::edf(data));
}
