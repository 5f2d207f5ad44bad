//! The specdef command line. The work is in the library; this file parses arguments and prints.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use specdef::engine::cpu::{CpuEngine32, CpuEngine64};
use specdef::engine::gpu::GpuEngine;
use specdef::{Engine, selftest};

#[derive(Parser)]
#[command(
    name = "specdef",
    version,
    about = "SpecDef training resistance and the attacks against it, on wgpu with an f64 CPU reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineChoice {
    /// WGSL on wgpu (WGPU_BACKEND and WGPU_ADAPTER_NAME pick the adapter)
    Gpu,
    /// The CPU twins in f32
    Cpu,
    /// The CPU twins in f64 (the reference)
    Cpu64,
}

#[derive(Subcommand)]
enum Command {
    /// Check every kernel family against the f64 reference and measure matmul throughput
    /// (the default command).
    Selftest {
        /// Engines to check; the GPU is skipped with a reason where no adapter exists.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [EngineChoice::Gpu, EngineChoice::Cpu])]
        engine: Vec<EngineChoice>,
        /// Square matmul size for the throughput line.
        #[arg(long, default_value_t = 1024)]
        matmul_size: usize,
    },
    /// Print the adapter the GPU engine would use, and its limits.
    Info,
}

fn open(choice: EngineChoice) -> Result<Box<dyn Engine>> {
    Ok(match choice {
        EngineChoice::Gpu => Box::new(GpuEngine::new().context("opening the GPU engine")?),
        EngineChoice::Cpu => Box::new(CpuEngine32::new()),
        EngineChoice::Cpu64 => Box::new(CpuEngine64::new()),
    })
}

fn run_selftest(engines: &[EngineChoice], matmul_size: usize) -> Result<()> {
    let mut failures = 0;
    for &choice in engines {
        let mut engine = match open(choice) {
            Ok(engine) => engine,
            Err(e) if choice == EngineChoice::Gpu => {
                println!("gpu: skipped ({e:#})\n");
                continue;
            }
            Err(e) => return Err(e),
        };
        println!("{}", engine.info());
        for case in selftest::parity_cases() {
            match selftest::check_case(&case, engine.as_mut()) {
                Ok(agreement) => println!(
                    "  ok    {:<24} max |error| {:.2e}  ({:.0}% of tolerance)",
                    case.name,
                    agreement.max_abs_error,
                    100.0 * agreement.worst_ratio
                ),
                Err(e) => {
                    failures += 1;
                    println!("  FAIL  {:<24} {e}", case.name);
                }
            }
        }
        let gflops = selftest::matmul_gflops(engine.as_mut(), matmul_size, 5)?;
        println!("  matmul {matmul_size}^3: {gflops:.1} GFLOP/s\n");
    }
    anyhow::ensure!(failures == 0, "{failures} kernel checks failed");
    Ok(())
}

fn print_info() -> Result<()> {
    let engine = GpuEngine::new().context("opening the GPU engine")?;
    let limits = engine.limits();
    println!("{}", engine.info());
    println!(
        "  max_storage_buffer_binding_size {} bytes, max_buffer_size {} bytes",
        limits.max_storage_buffer_binding_size, limits.max_buffer_size
    );
    println!(
        "  max_compute_invocations_per_workgroup {}, max_compute_workgroup_storage_size {} bytes",
        limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_storage_size
    );
    println!(
        "  GPU timestamps: {}",
        if engine.has_timestamps() { "yes" } else { "no" }
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Selftest {
        engine: vec![EngineChoice::Gpu, EngineChoice::Cpu],
        matmul_size: 1024,
    }) {
        Command::Selftest {
            engine,
            matmul_size,
        } => run_selftest(&engine, matmul_size),
        Command::Info => print_info(),
    }
}
