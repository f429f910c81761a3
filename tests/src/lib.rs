//! Shared harness for the integration tests lives here.
