//! Reading a Slurm allocation from the environment `salloc` and `sbatch` give their shell
//! (pure functions over an environment lookup, no I/O): the `@slurm` host entry and
//! `--slurm` (SPEC §4).
//!
//! - Nodes: `SLURM_JOB_NODELIST` (or the older `SLURM_NODELIST`), in the hostlist syntax
//!   ([`crate::hostlist`]).
//! - Slots per node: when the allocation asked for tasks (`-n`, `--ntasks-per-node`: Slurm
//!   then sets `SLURM_NTASKS`), `SLURM_TASKS_PER_NODE`, one slot per task, so that `salloc
//!   --ntasks-per-node=2 -c 4` runs 2 jobs per node with 4 CPUs each, as the user asked; else
//!   `SLURM_JOB_CPUS_PER_NODE`, one slot per allocated CPU (`salloc -N2 --exclusive` uses
//!   every core). Either falls back to the other when it is missing. Both come compressed
//!   (`2(x3),1`).
//! - Launcher: [`LAUNCHER`], one `srun` step per node that carries the agent's byte pipe.

use crate::hostlist;

/// The launcher of a Slurm node: one step of the allocation per node, run as a byte pipe.
///
/// - `--overlap`: the agent's step shares the node's CPUs with any other step, or it would
///   block every other step there (and the jobs it runs are ours to count anyway);
/// - `-u`: without it slurmstepd holds task output back until a newline, and the agent's
///   frames are binary (measured: a reply without a newline never arrived in 3 s; with `-u`
///   it came back at once);
/// - `-N1 -n1 -w <host>`: one task on that node; stdin goes to it by default.
pub const LAUNCHER: &str = "srun --overlap -u -N1 -n1 -w <host> --";

/// One node of the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node name as Slurm knows it (what `srun -w` takes).
    pub name: String,
    /// Its slot count; `None` when the allocation says nothing about counts.
    pub slots: Option<usize>,
}

/// The nodes of the allocation whose environment `env` looks up, with their slots.
///
/// Errors (a sentence for a usage error): outside an allocation (naming
/// `SLURM_JOB_NODELIST`), a node list or count list that does not parse, or counts that do
/// not match the nodes.
pub fn allocation(env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Node>, String> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (var, list) = match set("SLURM_JOB_NODELIST") {
        Some(l) => ("SLURM_JOB_NODELIST", l),
        None => match set("SLURM_NODELIST") {
            Some(l) => ("SLURM_NODELIST", l),
            None => {
                return Err(
                    "not inside a Slurm allocation: SLURM_JOB_NODELIST is not set \
                            (run bakapara under salloc or sbatch, or name hosts with -S)"
                        .to_string(),
                )
            }
        },
    };
    let names = hostlist::expand(&list).map_err(|e| format!("{var}: {e}"))?;
    let order = if set("SLURM_NTASKS").is_some() {
        ["SLURM_TASKS_PER_NODE", "SLURM_JOB_CPUS_PER_NODE"]
    } else {
        ["SLURM_JOB_CPUS_PER_NODE", "SLURM_TASKS_PER_NODE"]
    };
    let counts = match order.iter().find_map(|v| set(v).map(|text| (*v, text))) {
        None => None,
        Some((cvar, text)) => {
            let counts = hostlist::expand_counts(&text).map_err(|e| format!("{cvar}: {e}"))?;
            if counts.len() != names.len() {
                return Err(format!(
                    "{cvar} `{text}` gives {} counts for the {} nodes of {var} `{list}`",
                    counts.len(),
                    names.len()
                ));
            }
            if counts.contains(&0) {
                return Err(format!("{cvar} `{text}`: a node with 0 slots"));
            }
            Some(counts)
        }
    };
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Node {
            name,
            slots: counts.as_ref().map(|c| c[i]),
        })
        .collect())
}

/// [`allocation`] over this process's environment.
pub fn allocation_from_process_env() -> Result<Vec<Node>, String> {
    allocation(&|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn alloc(vars: &[(&str, &str)]) -> Result<Vec<(String, Option<usize>)>, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        allocation(&|k| map.get(k).cloned())
            .map(|nodes| nodes.into_iter().map(|n| (n.name, n.slots)).collect())
    }

    fn nodes(list: &[(&str, usize)]) -> Vec<(String, Option<usize>)> {
        list.iter()
            .map(|(n, s)| (n.to_string(), Some(*s)))
            .collect()
    }

    #[test]
    fn outside_an_allocation() {
        let e = alloc(&[]).unwrap_err();
        assert!(e.contains("SLURM_JOB_NODELIST"), "{e}");
        let e = alloc(&[("SLURM_JOB_NODELIST", " ")]).unwrap_err();
        assert!(e.contains("not inside"), "{e}");
    }

    // As `salloc -N2` gives them (measured with Slurm 22.05).
    #[test]
    fn cpus_without_tasks() {
        assert_eq!(
            alloc(&[
                ("SLURM_JOB_NODELIST", "n[1-2]"),
                ("SLURM_JOB_CPUS_PER_NODE", "4(x2)"),
                ("SLURM_TASKS_PER_NODE", "1(x2)"),
            ]),
            Ok(nodes(&[("n1", 4), ("n2", 4)]))
        );
    }

    // `salloc -N2 --ntasks-per-node=1 -c2`: SLURM_NTASKS=2, one task (= slot) per node.
    #[test]
    fn tasks_when_asked_for() {
        assert_eq!(
            alloc(&[
                ("SLURM_JOB_NODELIST", "n[1-2]"),
                ("SLURM_JOB_CPUS_PER_NODE", "2(x2)"),
                ("SLURM_TASKS_PER_NODE", "1(x2)"),
                ("SLURM_NTASKS", "2"),
            ]),
            Ok(nodes(&[("n1", 1), ("n2", 1)]))
        );
        // `salloc -n3` on two 2-CPU nodes
        assert_eq!(
            alloc(&[
                ("SLURM_JOB_NODELIST", "n[1-2]"),
                ("SLURM_JOB_CPUS_PER_NODE", "2,1"),
                ("SLURM_TASKS_PER_NODE", "2,1"),
                ("SLURM_NTASKS", "3"),
            ]),
            Ok(nodes(&[("n1", 2), ("n2", 1)]))
        );
    }

    #[test]
    fn fallbacks() {
        assert_eq!(
            alloc(&[("SLURM_NODELIST", "a,b"), ("SLURM_TASKS_PER_NODE", "3(x2)")]),
            Ok(nodes(&[("a", 3), ("b", 3)]))
        );
        assert_eq!(
            alloc(&[
                ("SLURM_JOB_NODELIST", "a"),
                ("SLURM_NTASKS", "1"),
                ("SLURM_JOB_CPUS_PER_NODE", "8")
            ]),
            Ok(nodes(&[("a", 8)]))
        );
        assert_eq!(
            alloc(&[("SLURM_JOB_NODELIST", "a")]),
            Ok(vec![("a".to_string(), None)])
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = alloc(&[("SLURM_JOB_NODELIST", "n[1-")]).unwrap_err();
        assert!(e.starts_with("SLURM_JOB_NODELIST: bad host range"), "{e}");
        let e = alloc(&[
            ("SLURM_JOB_NODELIST", "n[1-2]"),
            ("SLURM_JOB_CPUS_PER_NODE", "2(x3)"),
        ])
        .unwrap_err();
        assert!(e.contains("3 counts for the 2 nodes"), "{e}");
        let e = alloc(&[
            ("SLURM_JOB_NODELIST", "n1"),
            ("SLURM_JOB_CPUS_PER_NODE", "x"),
        ])
        .unwrap_err();
        assert!(
            e.starts_with("SLURM_JOB_CPUS_PER_NODE: bad count list"),
            "{e}"
        );
        let e = alloc(&[
            ("SLURM_JOB_NODELIST", "n1"),
            ("SLURM_JOB_CPUS_PER_NODE", "0"),
        ])
        .unwrap_err();
        assert!(e.contains("0 slots"), "{e}");
    }

    #[test]
    fn launcher_names_the_host() {
        assert!(LAUNCHER.contains("--overlap") && LAUNCHER.contains("-w <host>"));
        assert!(LAUNCHER.ends_with(" --"));
    }
}
