//! Which slice of the run list this process runs: `--shard I/N`, or what the scheduler that
//! started it says (a Slurm array task, a Kubernetes indexed Job's pod). The suite schedules
//! nothing itself; the slices are disjoint and, together, the whole list.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// From 0.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: need 0 <= index < count (shards count from 0)"
            ));
        }
        Ok(Self { index, count })
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// This shard's contiguous share of `items` (sizes differ by at most one). The bounds are
    /// computed in u128: `index * len` overflows usize for indices near 2^61 (a Slurm array's
    /// id is the user's to choose).
    pub fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let bound = |i: usize| (i as u128 * items.len() as u128 / self.count as u128) as usize;
        &items[bound(self.index)..bound(self.index + 1)]
    }

    /// The shard the environment names: a Slurm array task (SLURM_ARRAY_TASK_ID with
    /// SLURM_ARRAY_TASK_COUNT, or the array's MIN and MAX), or a Kubernetes indexed Job's
    /// JOB_COMPLETION_INDEX with `count` (which a Slurm array may also give, to check it).
    /// None where neither is set.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        count: Option<usize>,
    ) -> Result<Option<Self>, String> {
        let number = |name: &str| -> Result<Option<usize>, String> {
            var(name)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| format!("{name}={v:?} is not a whole number"))
                })
                .transpose()
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let array_count = match (
                number("SLURM_ARRAY_TASK_COUNT")?,
                number("SLURM_ARRAY_TASK_MAX")?,
            ) {
                (Some(n), _) => n,
                (None, Some(max)) if max >= min && max - min < usize::MAX => max - min + 1,
                _ => {
                    return Err(
                        "SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or \
                                SLURM_ARRAY_TASK_MAX: give --shard I/N"
                            .to_string(),
                    );
                }
            };
            if let Some(count) = count
                && count != array_count
            {
                return Err(format!(
                    "--shard-count {count} disagrees with the Slurm array's {array_count} tasks"
                ));
            }
            let index = id.checked_sub(min).ok_or_else(|| {
                format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
            })?;
            return Self::new(index, array_count)
                .map(Some)
                .map_err(|e| format!("the Slurm array task: {e} (the array must be contiguous)"));
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = count.ok_or(
                "JOB_COMPLETION_INDEX is set: give the Job's completions as --shard-count N \
                 (or SPECDEF_SHARD_COUNT)",
            )?;
            return Self::new(index, count).map(Some);
        }
        Ok(None)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("shard {text:?}: write it I/N, as 0/4"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("shard {text:?}: {v:?} is not a whole number"))
        };
        Self::new(parse(index)?, parse(count)?)
    }
}
