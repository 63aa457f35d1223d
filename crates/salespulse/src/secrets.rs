//! Secrets from files and the environment, so none has to sit in the configuration file. Errors
//! name the key, the file or the variable, never the value.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use salespulse_kafka::KafkaProperties;

/// Resolves `[kafka.properties]`: `"KEY_file" = PATH` becomes `KEY` = the file's content (one
/// trailing newline removed), `"KEY_env" = NAME` becomes `KEY` = the variable's value; other keys
/// pass as they are. A key given twice (`sasl.password` and `sasl.password_file`) is an error.
pub fn resolve_properties(raw: &BTreeMap<String, String>) -> anyhow::Result<KafkaProperties> {
    let mut resolved = BTreeMap::new();
    for (key, value) in raw {
        let (name, secret) = if let Some(name) = key.strip_suffix("_file") {
            (name, read_file(Path::new(value)).with_context(|| format!("{key:?}"))?)
        } else if let Some(name) = key.strip_suffix("_env") {
            (name, read_env(value).with_context(|| format!("{key:?}"))?)
        } else {
            (key.as_str(), value.clone())
        };
        if resolved.insert(name.to_owned(), secret).is_some() {
            bail!("{name:?} is given twice (directly and through _file or _env)");
        }
    }
    Ok(KafkaProperties(resolved))
}

/// One secret given inline, in a file or in an environment variable (at most one of them).
pub fn one_of(
    what: &str,
    inline: Option<&str>,
    file: Option<&Path>,
    env: Option<&str>,
) -> anyhow::Result<Option<String>> {
    match (inline, file, env) {
        (None, None, None) => Ok(None),
        (Some(value), None, None) => Ok(Some(value.to_owned())),
        (None, Some(path), None) => read_file(path).map(Some).with_context(|| format!("{what}_file")),
        (None, None, Some(name)) => read_env(name).map(Some).with_context(|| format!("{what}_env")),
        _ => bail!("give {what} one way only: {what}, {what}_file or {what}_env"),
    }
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    let mut text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(text)
}

fn read_env(name: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => bail!("environment variable {name} is empty"),
        Err(_) => bail!("environment variable {name} is not set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_variables_fill_their_keys_and_errors_never_show_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cr3t-from-file\n").unwrap();
        std::env::set_var("SALESPULSE_TEST_SECRET_VAR", "s3cr3t-from-env");
        let raw: BTreeMap<String, String> = [
            ("sasl.password_file", file.to_str().unwrap()),
            ("ssl.key.password_env", "SALESPULSE_TEST_SECRET_VAR"),
            ("sasl.username", "salespulse"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let resolved = resolve_properties(&raw).unwrap();
        assert_eq!(resolved.get("sasl.password"), Some("s3cr3t-from-file"));
        assert_eq!(resolved.get("ssl.key.password"), Some("s3cr3t-from-env"));
        assert_eq!(resolved.get("sasl.username"), Some("salespulse"));
        let dump = format!("{resolved:?}");
        assert!(!dump.contains("s3cr3t"), "{dump}");

        let mut twice = raw.clone();
        twice.insert("sasl.password".into(), "inline-s3cr3t".into());
        let error = format!("{:#}", resolve_properties(&twice).unwrap_err());
        assert!(error.contains("given twice") && !error.contains("s3cr3t"), "{error}");
        let missing: BTreeMap<String, String> =
            [("sasl.password_env".to_owned(), "SALESPULSE_TEST_UNSET_VAR".to_owned())].into_iter().collect();
        let error = format!("{:#}", resolve_properties(&missing).unwrap_err());
        assert!(error.contains("SALESPULSE_TEST_UNSET_VAR is not set"), "{error}");
        assert!(one_of("password", Some("a"), Some(&file), None).is_err());
        assert_eq!(one_of("password", None, Some(&file), None).unwrap().as_deref(), Some("s3cr3t-from-file"));
    }
}
