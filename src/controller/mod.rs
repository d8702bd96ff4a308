//! The Function controller: the `Function` resource, its defaults and validation, the objects
//! it owns, the reconcile loop, the admission webhooks and the controller's metrics.

pub mod compare;
pub mod defaults;
pub mod desired;
pub mod manifests;
pub mod resources;
pub mod settings;
pub mod types;
pub mod validation;

pub use types::{Function, FunctionSpec, FunctionStatus};
