//! A tmux server of a test's own, for behaviour that needs a real terminal: an interactive
//! bash in a pane, keys sent to it, the screen read back.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long to wait for the screen to show something (the machine may be busy).
pub const WAIT: Duration = Duration::from_secs(60);

/// A tmux server on a socket of its own; killed when dropped, also on failure.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a detached session running `shell_command` in a `width` x `height` pane.
    pub fn start(name: &str, width: u16, height: u16, shell_command: &str) -> Tmux {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmux = Tmux {
            socket: format!("bakapara-{name}-{}-{nanos}", std::process::id()),
        };
        let out = tmux.command(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            shell_command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// An interactive bash without start-up files, its prompt `pane$ `.
    pub fn bash(name: &str) -> Tmux {
        let tmux = Tmux::start(
            name,
            150,
            40,
            "env PS1='pane$ ' HISTFILE=/dev/null bash --norc --noprofile -i",
        );
        tmux.wait_for_screen("the prompt", |s| s.contains("pane$"));
        tmux
    }

    pub fn command(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux (is it installed?)")
    }

    /// Types `text` and Enter.
    pub fn type_line(&self, text: &str) {
        let out = self.command(&["send-keys", "-l", text]);
        assert!(out.status.success(), "tmux send-keys");
        self.keys("Enter");
    }

    /// Sends keys by tmux name (`C-z`, `Enter`).
    pub fn keys(&self, keys: &str) {
        let out = self.command(&["send-keys", keys]);
        assert!(out.status.success(), "tmux send-keys {keys}");
    }

    /// The visible screen of the pane, lines without trailing blanks (a line the terminal
    /// wrapped comes joined).
    pub fn screen(&self) -> String {
        let out = self.command(&["capture-pane", "-p", "-J"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `cond` holds; panics with the last screen after [`WAIT`].
    pub fn wait_for_screen(&self, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            assert!(
                Instant::now() <= deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `path` exists (a command in the pane wrote it).
    pub fn wait_for_file(&self, path: &Path) {
        let deadline = Instant::now() + WAIT;
        while !path.exists() {
            assert!(
                Instant::now() <= deadline,
                "timed out waiting for {}; the screen:\n{}",
                path.display(),
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]);
    }
}

/// `path` quoted as one shell word.
pub fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
