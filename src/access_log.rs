//! Where access log lines go (`server.access_log`, `server.access_log_file`):
//! nowhere, or one line per request as text or JSON, to stderr or to a file
//! that is opened again on SIGHUP (after logrotate has moved it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::config::AccessLogFormat as Format;

/// The access log's destination.
pub struct AccessSink {
    format: Format,
    path: Option<PathBuf>,
    /// The open file; `None`: stderr.
    file: Mutex<Option<File>>,
}

impl AccessSink {
    /// Opens `path` for appending (stderr when `None`).
    pub fn open(format: Format, path: Option<&Path>) -> std::io::Result<Self> {
        let file = match (format, path) {
            (Format::Off, _) | (_, None) => None,
            (_, Some(path)) => Some(append(path)?),
        };
        Ok(Self {
            format,
            path: path.map(Path::to_path_buf),
            file: Mutex::new(file),
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn enabled(&self) -> bool {
        self.format != Format::Off
    }

    /// Writes one line (a newline is added).
    pub fn write(&self, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let written = match file.as_mut() {
            Some(file) => writeln!(file, "{line}"),
            None => writeln!(std::io::stderr().lock(), "{line}"),
        };
        // A full disk must not fail requests: the line is lost, said once per line.
        if let Err(e) = written {
            tracing::warn!(error = %e, "access log line not written");
        }
    }

    /// Opens the file again under its name (SIGHUP, after logrotate moved it).
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(path) = self.path.as_deref().filter(|_| self.enabled()) else {
            return Ok(());
        };
        let reopened = append(path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(reopened);
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
