//! fnbuild: turns a serverless function's source into an OCI image without a Docker daemon.

pub mod build;
pub mod cli;
pub mod daemon;
pub mod function;
pub mod image;
pub mod init;
pub mod reference;
pub mod registry;
pub mod scratch;
pub mod secrets;
pub mod sinks;
pub mod sources;
pub mod text;

#[cfg(test)]
mod parser_props;
