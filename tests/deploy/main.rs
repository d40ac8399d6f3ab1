//! The deployment files against the binary they deploy, with no container engine and no
//! database: deploy/compose.yaml's commands and variables, and deploy/alerts.yaml's metric
//! names and its promtool checks and unit tests. (scripts/container-check.sh builds and runs
//! the image itself.)

mod alerts;
mod compose;
mod yaml;
