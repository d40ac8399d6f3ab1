//! The deployment files against the binary they deploy, with no container engine and no
//! database: deploy/compose.yaml's commands and variables. (scripts/container-check.sh builds
//! and runs the image itself.)

mod compose;
mod yaml;
