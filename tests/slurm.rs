//! A real Slurm: `deploy/slurm/local-cluster.sh` starts a one-node cluster on this machine,
//! `deploy/slurm/submit.sh` submits the quick sweep as a 4-task array and the merge as a job
//! that depends on it, and the merged results must equal the same sweep run in one process
//! (`specdef compare`, default tolerances: the same engine computes both). Without Slurm and
//! munge installed the test prints why and passes; under SPECDEF_REQUIRE_SLURM=1 (CI installs
//! them) it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DAEMONS: [&str; 4] = ["sbatch", "slurmctld", "slurmd", "munged"];

fn installed(program: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    (std::env::split_paths(&dirs).chain(["/usr/sbin".into(), "/sbin".into()]))
        .any(|dir| dir.join(program).is_file())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shown(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The local cluster, stopped however the test ends.
struct Cluster {
    state: PathBuf,
}

impl Cluster {
    fn command(&self, action: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(repo().join("deploy/slurm/local-cluster.sh"))
            .arg(action)
            .env("SPECDEF_SLURM_DIR", &self.state);
        command
    }

    /// The cluster's SLURM_CONF, from the env file the start wrote.
    fn slurm_conf(&self) -> PathBuf {
        self.state.join("slurm.conf")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command("stop").output();
    }
}

fn specdef_sweep(cache: &Path, out: &Path) -> Command {
    let mut command = common::specdef_cli(cache);
    command
        .args(["sweep", "--quick", "--engine", "cpu", "--out"])
        .arg(out);
    command
}

#[test]
fn the_quick_sweep_as_a_slurm_array_merges_to_the_sweep_run_whole() {
    let missing: Vec<&str> = DAEMONS.into_iter().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        let why = format!("Slurm is not installed here (no {})", missing.join(", "));
        if std::env::var("SPECDEF_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
            panic!("SPECDEF_REQUIRE_SLURM=1 but {why}");
        }
        eprintln!("skipping the Slurm test: {why} (apt-get install slurm-wlm munge)");
        return;
    }
    let dir = common::scratch("slurm", "array");
    let cache = dir.join("cache");

    let cluster = Cluster {
        state: dir.join("cluster"),
    };
    let started = cluster.command("start").output().unwrap();
    assert!(
        started.status.success(),
        "starting the local cluster: {}",
        shown(&started)
    );

    let out = dir.join("array");
    let submitted = Command::new("bash")
        .arg(repo().join("deploy/slurm/submit.sh"))
        .arg("-")
        .arg(&out)
        .arg("4")
        .arg("--wait")
        .env("SLURM_CONF", cluster.slurm_conf())
        .env("SPECDEF_BIN", env!("CARGO_BIN_EXE_specdef"))
        .env("SPECDEF_CACHE_DIR", &cache)
        .env("SPECDEF_SWEEP_ARGS", "--quick --engine cpu")
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "the array and its merge: {}",
        shown(&submitted)
    );
    for i in 0..4 {
        let shard = out.join(format!("shard-{i}-of-4"));
        assert!(
            shard.join("sweep.json").is_file(),
            "{} missing",
            shard.display()
        );
    }

    let whole = dir.join("whole");
    let ran = specdef_sweep(&cache, &whole).output().unwrap();
    assert!(ran.status.success(), "the sweep run whole: {}", shown(&ran));
    let compared = Command::new(env!("CARGO_BIN_EXE_specdef"))
        .arg("compare")
        .arg(whole.join("results/runs.jsonl"))
        .arg(out.join("results/runs.jsonl"))
        .output()
        .unwrap();
    assert!(
        compared.status.success(),
        "merged array against whole: {}",
        shown(&compared)
    );
    let report = String::from_utf8_lossy(&compared.stdout);
    assert!(report.contains("all runs agree"), "{report}");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
