//! `--results DIR`: each finished job's stdout, stderr and seq as files under DIR, in GNU
//! Parallel's layout (`DIR/1/<arg1>/2/<arg2>/stdout`). The output writer calls it with the
//! job's spooled streams; it knows nothing of how they were captured.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::exec::Captured;

/// The root directory of `--results`.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    root: PathBuf,
}

impl ResultsDir {
    #[must_use]
    pub fn new(root: PathBuf) -> ResultsDir {
        ResultsDir { root }
    }

    /// Checks a `--results` name: GNU's other forms (a `.csv`, `.tsv` or `.json` file, a name
    /// with replacement strings) are refused, naming what to use instead.
    pub fn check(name: &Path) -> Result<(), String> {
        let text = name.to_string_lossy();
        for ext in [".csv", ".tsv", ".json"] {
            if text.ends_with(ext) {
                return Err(format!(
                    "--results {text}: GNU Parallel's {ext} file is not supported; give a \
                     directory (each job's stdout, stderr and seq go under it), or use \
                     --joblog FILE for the JSON result lines"
                ));
            }
        }
        if crate::template::Template::parse(&text).is_ok_and(|t| t.has_tokens()) {
            return Err(format!(
                "--results {text}: a name with tokens (one file or directory per job, as GNU \
                 Parallel's --results my_{{}}/) is not supported; give a plain directory, or \
                 use --out/--err templates"
            ));
        }
        Ok(())
    }

    /// The directory of a job with these sources or columns: `ROOT/1/<v1>/2/<v2>...`.
    #[must_use]
    pub fn job_dir(&self, args: &[String]) -> PathBuf {
        let mut dir = self.root.clone();
        for (i, value) in args.iter().enumerate() {
            dir.push((i + 1).to_string());
            dir.push(escape(value));
        }
        dir
    }

    /// Writes `stdout`, `stderr` (empty when the stream went to the job's own file) and `seq`
    /// (the number, no newline, as GNU writes it) into the job's directory.
    pub fn write(
        &self,
        args: &[String],
        seq: u64,
        stdout: Option<&Captured>,
        stderr: Option<&Captured>,
    ) -> Result<(), String> {
        let dir = self.job_dir(args);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for (name, stream) in [("stdout", stdout), ("stderr", stderr)] {
            let path = dir.join(name);
            write_stream(&path, stream)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let path = dir.join("seq");
        std::fs::write(&path, seq.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

fn write_stream(path: &Path, stream: Option<&Captured>) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    match stream {
        Some(Captured {
            spool: Some(spool), ..
        }) => {
            let mut from = spool.file();
            from.seek(SeekFrom::Start(0))?;
            std::io::copy(&mut from, &mut file)?;
        }
        Some(captured) => file.write_all(&captured.bytes)?,
        None => {}
    }
    Ok(())
}

/// A value as one directory name, as GNU Parallel names it (`/` as `\_`, `\` as `\\`), and
/// never one that leaves the tree or is empty: `.` and `..` become `\.` and `\.\.`, the empty
/// value `\empty` (GNU leaves those three alone, so `..` writes over a parent's files).
fn escape(value: &str) -> String {
    match value {
        "" => return "\\empty".to_string(),
        "." => return "\\.".to_string(),
        ".." => return "\\.\\.".to_string(),
        _ => {}
    }
    let mut name = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => name.push_str("\\\\"),
            '/' => name.push_str("\\_"),
            '\0' => name.push_str("\\0"),
            c => name.push(c),
        }
    }
    name
}

/// A spooled stream read back as a capture of at most `limit` bytes (for the result line in
/// JSON mode, when `--results` had the stream spooled whole). Other captures are returned as
/// they are.
#[must_use]
pub fn capture_from_spool(captured: Captured, limit: usize) -> Captured {
    let Some(spool) = &captured.spool else {
        return captured;
    };
    let mut file = spool.file();
    let mut bytes = Vec::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| (&mut file).take(limit as u64).read_to_end(&mut bytes));
    let len = spool.file().metadata().map_or(0, |m| m.len());
    if read.is_err() {
        bytes.clear();
    }
    Captured {
        truncated: len > bytes.len() as u64,
        bytes,
        spool: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_one_directory_name_each() {
        assert_eq!(escape("a/b"), "a\\_b");
        assert_eq!(escape("x\\y"), "x\\\\y");
        assert_eq!(escape("x\\_y"), "x\\\\_y");
        assert_eq!(escape(""), "\\empty");
        assert_eq!(escape(".."), "\\.\\.");
        assert_eq!(escape("..."), "...");
        let dir = ResultsDir::new(PathBuf::from("r"));
        let args = ["I".to_string(), "dir/f".to_string()];
        assert_eq!(dir.job_dir(&args), PathBuf::from("r/1/I/2/dir\\_f"));
    }

    #[test]
    fn other_forms_of_gnu_results_are_refused() {
        assert!(ResultsDir::check(Path::new("out")).is_ok());
        assert!(ResultsDir::check(Path::new("out/")).is_ok());
        for bad in ["r.csv", "r.tsv", "-.json", "my_<>/"] {
            assert!(ResultsDir::check(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spool_reads_back_within_the_limit() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello world").unwrap();
        let spooled = Captured::spooled(file);
        let cut = capture_from_spool(spooled.clone(), 5);
        assert_eq!(cut.bytes, b"hello");
        assert!(cut.truncated);
        let whole = capture_from_spool(spooled, 100);
        assert_eq!(whole.bytes, b"hello world");
        assert!(!whole.truncated);
    }
}
