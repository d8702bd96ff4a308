//! fnbuild: turns a serverless function's source into an OCI image without a Docker daemon.

pub mod attest;
pub mod build;
pub mod cli;
pub mod formats;
pub mod function;
pub mod git;
pub mod init;
pub mod oci;
pub mod registry;
pub mod runtime_image;
pub mod sbom;
pub mod scratch;
pub mod secrets;
pub mod text;

#[cfg(test)]
mod parser_props;
