//! Tests of the sshd test harness itself (tests/common/sshd.rs): real OpenSSH servers on
//! 127.0.0.1, reached by name through one client config, killed and restarted.

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::sshd::{pids_with_cmdline_containing, wait_until, SshCluster, SshdHost};

const T: Duration = Duration::from_secs(15);

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_string()
}

/// Starts `ssh <name> '<cmd>'` in the background (a long-running session).
fn background(cluster: &SshCluster, name: &str, cmd: &str) -> Child {
    cluster
        .ssh_command(name)
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh")
}

/// A remote command that runs `sleep 300` under a unique name, and that name. The quotes
/// keep the name out of the local ssh client's own command line.
fn unique_sleep(tag: &str) -> (String, String) {
    let pid = std::process::id();
    (
        format!("exec -a bakapara-\"{tag}\"-{pid} sleep 300"),
        format!("bakapara-{tag}-{pid}"),
    )
}

#[test]
fn three_hosts_each_report_their_name() {
    let cluster = SshCluster::start(&["h1", "h2", "h3"]);
    let ports: HashSet<u16> = cluster
        .hosts()
        .iter()
        .map(super::common::sshd::SshdHost::port)
        .collect();
    assert_eq!(ports.len(), 3, "distinct ports");
    assert_eq!(cluster.sshlogins(2), "h1/2,h2/2,h3/2");
    for name in ["h1", "h2", "h3"] {
        let out = cluster.ssh(name, "echo $BAKAPARA_TEST_HOST");
        assert!(out.status.success(), "ssh {name}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), name);
        assert_eq!(out.stderr, b"", "no noise on stderr");
    }
    // the config is the only way to these names
    let cfg = std::fs::read_to_string(cluster.ssh_config_path()).unwrap();
    assert!(cfg.contains("Host h2\n"), "{cfg}");
}

#[test]
fn remote_exit_codes_come_through() {
    let cluster = SshCluster::start(&["h1"]);
    let out = cluster.ssh("h1", "exit 7");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn kill_hard_then_restart() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let h2 = cluster.host("h2");
    let port = h2.port();
    let (cmd, needle) = unique_sleep("kill-hard");
    let mut client = background(&cluster, "h2", &cmd);
    wait_until(T, "the remote sleep to start", || {
        !pids_with_cmdline_containing(&needle).is_empty()
    });
    assert!(!h2.session_pids().is_empty());

    h2.kill_hard();
    assert!(!h2.is_running());
    assert!(
        pids_with_cmdline_containing(&needle).is_empty(),
        "job killed"
    );
    assert!(h2.session_pids().is_empty(), "sessions killed");
    wait_until(T, "the ssh client to notice", || {
        matches!(client.try_wait(), Ok(Some(_)))
    });
    assert_eq!(client.wait().unwrap().code(), Some(255));

    let out = cluster.ssh("h2", "true");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    // the other host is unaffected
    assert_eq!(
        text(&cluster.ssh("h1", "echo $BAKAPARA_TEST_HOST").stdout),
        "h1"
    );

    h2.restart();
    assert_eq!(h2.port(), port);
    let out = cluster.ssh("h2", "echo $BAKAPARA_TEST_HOST");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "h2");
}

#[test]
fn restart_waits_while_the_port_is_taken() {
    let cluster = SshCluster::start(&["h1"]);
    let h1 = cluster.host("h1");
    h1.kill_hard();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", h1.port())).expect("take the port");
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            drop(squatter);
        });
        h1.restart();
    });
    assert!(cluster.ssh("h1", "true").status.success());
}

#[test]
fn connections_are_counted() {
    let cluster = SshCluster::start(&["h1"]);
    let h1 = cluster.host("h1");
    // The readiness check's own connection may still be closing.
    wait_until(T, "no connection left", || h1.connection_pids().is_empty());
    let (cmd, needle) = unique_sleep("count");
    let mut a = background(&cluster, "h1", &cmd);
    let mut b = background(&cluster, "h1", &cmd);
    wait_until(T, "two sessions", || {
        pids_with_cmdline_containing(&needle).len() == 2
    });
    assert_eq!(h1.connection_pids().len(), 2);
    for p in pids_with_cmdline_containing(&needle) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(p).expect("a pid is an i32")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    a.wait().unwrap();
    b.wait().unwrap();
    wait_until(T, "the connections to close", || {
        h1.connection_pids().is_empty()
    });
    assert!(h1.session_pids().is_empty());
}

#[test]
fn stop_refuses_new_logins_but_keeps_sessions() {
    let cluster = SshCluster::start(&["h1"]);
    let h1 = cluster.host("h1");
    let (cmd, needle) = unique_sleep("stop");
    let mut client = background(&cluster, "h1", &cmd);
    wait_until(T, "the remote sleep to start", || {
        !pids_with_cmdline_containing(&needle).is_empty()
    });

    h1.stop();
    assert!(!h1.is_running());
    assert_eq!(cluster.ssh("h1", "true").status.code(), Some(255));
    assert!(
        matches!(client.try_wait(), Ok(None)),
        "session survives stop"
    );
    assert!(!pids_with_cmdline_containing(&needle).is_empty());

    h1.restart();
    assert!(cluster.ssh("h1", "true").status.success());

    // kill_hard also finds the sessions of the stopped listener
    h1.kill_hard();
    assert!(pids_with_cmdline_containing(&needle).is_empty());
    assert_eq!(client.wait().unwrap().code(), Some(255));
}

#[test]
fn drop_leaves_nothing_behind() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let configs: Vec<String> = cluster
        .hosts()
        .iter()
        .map(|h| h.config_path().display().to_string())
        .collect();
    let dirs: Vec<_> = cluster.hosts().iter().map(|h| h.dir().to_owned()).collect();
    let cfg = cluster.ssh_config_path().to_owned();
    for c in &configs {
        assert_eq!(
            pids_with_cmdline_containing(c).len(),
            1,
            "one listener for {c}"
        );
    }
    let (cmd, needle) = unique_sleep("drop");
    let mut clients: Vec<Child> = ["h1", "h2"]
        .iter()
        .map(|n| background(&cluster, n, &cmd))
        .collect();
    // a session process that leaves the tree (double fork) is found by its environment
    let (escaped_cmd, escaped) = unique_sleep("escaped");
    let out = cluster.ssh(
        "h1",
        &format!("(setsid bash -c '{escaped_cmd}' >/dev/null 2>&1 &)"),
    );
    assert!(out.status.success());
    wait_until(T, "the remote sleeps to start", || {
        pids_with_cmdline_containing(&needle).len() == 2
            && !pids_with_cmdline_containing(&escaped).is_empty()
    });

    drop(cluster);

    for c in &configs {
        assert!(
            pids_with_cmdline_containing(c).is_empty(),
            "sshd left for {c}"
        );
    }
    assert!(pids_with_cmdline_containing(&needle).is_empty());
    assert!(pids_with_cmdline_containing(&escaped).is_empty());
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    assert!(!cfg.exists());
    for c in &mut clients {
        assert_eq!(c.wait().unwrap().code(), Some(255));
    }
}

#[test]
fn drop_on_panic_kills_the_server() {
    let config = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let host = SshdHost::start("p1");
        *config.lock().unwrap() = host.config_path().display().to_string();
        panic!("test body fails");
    });
    assert!(result.is_err());
    let config = config.into_inner().unwrap();
    assert!(!config.is_empty());
    assert!(pids_with_cmdline_containing(&config).is_empty());
}

#[test]
fn builder_options_apply() {
    let cluster = SshCluster::from_builders(vec![
        SshdHost::builder("f1").config_line("ForceCommand echo forced-$BAKAPARA_TEST_HOST"),
        SshdHost::builder("e1").env("EXTRA_VAR", "has space"),
    ]);
    assert_eq!(text(&cluster.ssh("f1", "echo other").stdout), "forced-f1");
    let out = cluster.ssh("e1", "echo \"$EXTRA_VAR/$BAKAPARA_TEST_HOST\"");
    assert_eq!(text(&out.stdout), "has space/e1");
}

#[test]
fn single_host_direct_ssh() {
    let host = SshdHost::start("solo");
    let out = host.ssh("echo $BAKAPARA_TEST_HOST; echo $BAKAPARA_TEST_SSHD");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("solo\n{}", host.dir().display()));
}

#[test]
fn many_hosts_started_in_parallel_threads_do_not_mix_up() {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                s.spawn(move || {
                    let names: Vec<String> = (0..3).map(|j| format!("t{i}h{j}")).collect();
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    let cluster = SshCluster::start(&refs);
                    for n in &refs {
                        let out = cluster.ssh(n, "echo $BAKAPARA_TEST_HOST");
                        assert_eq!(text(&out.stdout), *n, "{}", text(&out.stderr));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn server_started_on_a_finished_thread_keeps_running() {
    // the listener must not die with the thread that started it (PR_SET_PDEATHSIG pitfall)
    let host = std::thread::spawn(|| SshdHost::start("th")).join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(host.is_running());
    assert!(host.ssh("true").status.success());
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting for the impossible")]
fn wait_until_panics_with_its_description() {
    wait_until(Duration::from_millis(50), "the impossible", || false);
}
