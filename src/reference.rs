//! Image references (registry/repository:tag@digest), with docker.io normalisation.
