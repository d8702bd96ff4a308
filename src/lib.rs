//! fnbuild: turns a serverless function's source into an OCI image without a Docker daemon.

pub mod reference;
pub mod registry;
