//! Standard output for commands, tolerant of a reader that stops reading: `plangate validate f |
//! head -1` closes the pipe, and `println!` would panic on the broken pipe. Here the rest of the
//! output is dropped quietly and the command ends with the exit code it would have had.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// Lines to standard output.
pub struct Out {
    closed: bool,
}

impl Out {
    pub fn stdout() -> Self {
        Out { closed: false }
    }

    /// Writes `s` and a newline, unless the reader has gone.
    pub fn line(&mut self, s: impl Display) {
        self.write(format_args!("{s}\n"));
    }

    /// Writes `s` as is, unless the reader has gone.
    pub fn text(&mut self, s: impl Display) {
        self.write(format_args!("{s}"));
    }

    fn write(&mut self, args: std::fmt::Arguments<'_>) {
        if self.closed {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
            // A closed pipe ends the output; any other failure is reported once, on stderr.
            if e.kind() != ErrorKind::BrokenPipe {
                eprintln!("error: cannot write to standard output: {e}");
            }
            self.closed = true;
        }
    }
}
