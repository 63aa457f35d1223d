//! The manager directory: which `manager_id` (and team) a source's own user key stands for.

use std::collections::HashMap;

/// The manager of events whose source key is not in the directory: such events are counted,
/// under this manager, rather than dropped, so an unmapped new employee shows up on dashboards.
pub const UNATTRIBUTED: &str = "unattributed";

/// `(source, key) -> (manager_id, team)`, read from a CSV file with lines
/// `source,key,manager_id[,team]` (`#` starts a comment line; surrounding spaces are trimmed).
#[derive(Debug, Default, Clone)]
pub struct Directory {
    entries: HashMap<String, HashMap<String, (String, Option<String>)>>,
}

impl Directory {
    /// Parses the file's text; an error names the line.
    pub fn parse(text: &str) -> Result<Directory, String> {
        let mut directory = Directory::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let (source, key, manager, team) = match fields.as_slice() {
                [source, key, manager] => (*source, *key, *manager, None),
                [source, key, manager, team] => (*source, *key, *manager, Some(*team).filter(|t| !t.is_empty())),
                _ => return Err(format!("line {}: expected source,key,manager_id[,team]", number + 1)),
            };
            if source.is_empty() || key.is_empty() || manager.is_empty() {
                return Err(format!("line {}: source, key and manager_id must not be empty", number + 1));
            }
            let previous = directory
                .entries
                .entry(source.to_owned())
                .or_default()
                .insert(key.to_owned(), (manager.to_owned(), team.map(str::to_owned)));
            if previous.is_some() {
                return Err(format!("line {}: {source},{key} is listed twice", number + 1));
            }
        }
        Ok(directory)
    }

    /// The manager for `key` of `source`, or [`UNATTRIBUTED`].
    pub fn manager(&self, source: &str, key: &str) -> &str {
        self.entries.get(source).and_then(|m| m.get(key)).map_or(UNATTRIBUTED, |(manager, _)| manager.as_str())
    }

    /// The team for `key` of `source`, if the directory names one.
    pub fn team(&self, source: &str, key: &str) -> Option<&str> {
        self.entries.get(source).and_then(|m| m.get(key)).and_then(|(_, team)| team.as_deref())
    }

    /// Keys listed for `source`.
    pub fn len_for(&self, source: &str) -> usize {
        self.entries.get(source).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_errors() {
        let d = Directory::parse("# comment\n\nasterisk, 101, m-ivanov, north\nwazzup,crm-user-17,m-ivanov\n").unwrap();
        assert_eq!(d.manager("asterisk", "101"), "m-ivanov");
        assert_eq!(d.team("asterisk", "101"), Some("north"));
        assert_eq!(d.team("wazzup", "crm-user-17"), None);
        assert_eq!(d.manager("asterisk", "102"), UNATTRIBUTED);
        assert_eq!(d.manager("wazzup", "101"), UNATTRIBUTED);
        assert_eq!(d.len_for("asterisk"), 1);
        for (bad, needle) in [("a,b\n", "line 1"), ("x,y,z\na,,m\n", "line 2"), ("a,b,c\na,b,d\n", "twice")] {
            assert!(Directory::parse(bad).unwrap_err().contains(needle), "{bad}");
        }
    }
}
