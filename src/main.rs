//! Thin binary: parse the command line, load and validate config, init tracing, run.

use clap::Parser;
use keygate::cli::{Cli, Command};
use keygate::config::{Config, LogFormat};
use std::process::ExitCode;

/// Exit status for a config that does not validate (sysexits' EX_CONFIG) when serving;
/// `check-config` answers 1, as a yes/no check.
const EXIT_CONFIG: u8 = 78;

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The runtime for `server.workers` threads (default: one per core). One worker runs on a
/// single-threaded runtime: with nothing to steal work from, the multi-thread scheduler's
/// cross-thread wake-ups are pure cost. Blocking store calls still go to the blocking pool.
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo(args) = cli.command {
        init_tracing(LogFormat::Text, "warn");
        let result = runtime(None)
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(keygate::demo::run(args)));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", cli.config.display());
            return match cli.command {
                Command::CheckConfig => ExitCode::FAILURE,
                _ => ExitCode::from(EXIT_CONFIG),
            };
        }
    };
    match cli.command {
        Command::CheckConfig => {
            // The TLS files are part of the config: a missing or bad one fails here too.
            if let Some(Err(e)) = config.tls.as_ref().map(keygate::server::tls_acceptor) {
                eprintln!("error: {}: tls: {e}", cli.config.display());
                return ExitCode::FAILURE;
            }
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "config": cli.config.display().to_string(), "valid": true })
                );
            } else {
                println!(
                    "{}: ok ({} routes, {} upstreams)",
                    cli.config.display(),
                    config.routes.len(),
                    config.upstreams.len()
                );
            }
            ExitCode::SUCCESS
        }
        Command::Serve => {
            init_tracing(config.log.format, &config.log.level);
            let rt = match runtime(config.server.workers) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(config, &cli.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "keygate stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        cmd => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(keygate::cli::run_management(cmd, &config)) {
                Ok(out) => {
                    if cli.json {
                        println!("{}", out.json);
                    } else {
                        println!("{}", out.text);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    if cli.json {
                        eprintln!("{}", serde_json::json!({ "error": e.to_string() }));
                    } else {
                        eprintln!("error: {e}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let running = keygate::app::App::build(config).await?.start().await?;
    tracing::info!(admin = %running.admin_addr(), "admin API serving");
    let c = running.config();
    tracing::info!(listen = %running.addr(), tls = c.tls.is_some(), routes = c.routes.len(), "keygate serving");
    running.run_until_signalled(path).await;
    Ok(())
}
