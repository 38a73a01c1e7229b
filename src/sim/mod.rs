//! Simulated devices: genuine network peers used by `--demo` and the tests.
