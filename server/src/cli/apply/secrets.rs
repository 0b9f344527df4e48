//! Reading a credential's secret from where the file says it is: an environment variable or a
//! file. The value is held in a zeroizing `Secret`; messages name where it was looked for and
//! never show it.

use super::file::SecretRef;
use crate::secret::Secret;

/// Where a secret comes from, for the plan ("from $RELAY_PASSWORD").
pub fn describe(reference: &SecretRef) -> String {
    match (&reference.env, &reference.file) {
        (Some(env), _) => format!("from ${env}"),
        (None, Some(file)) => format!("from {file}"),
        (None, None) => "not given".to_owned(),
    }
}

/// Whether the file says where the secret is.
pub fn is_given(reference: &SecretRef) -> bool {
    reference.env.is_some() || reference.file.is_some()
}

/// Reads the secret `field`; `Err` says what is missing and how to fix it.
pub fn resolve(field: &str, reference: &SecretRef) -> Result<Secret, String> {
    let value = match (&reference.env, &reference.file) {
        (Some(env), _) => std::env::var(env).map_err(|e| match e {
            std::env::VarError::NotPresent => {
                format!("{field}_env: the environment variable {env} is not set")
            }
            std::env::VarError::NotUnicode(_) => {
                format!("{field}_env: the environment variable {env} is not valid UTF-8")
            }
        })?,
        (None, Some(path)) => {
            let mut text = std::fs::read_to_string(path)
                .map_err(|e| format!("{field}_file: cannot read {path}: {e}"))?;
            // One trailing newline is how files are written; the secret is what precedes it.
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            text
        }
        (None, None) => {
            return Err(format!(
                "{field}_env or {field}_file is needed to send the {field}"
            ));
        }
    };
    let secret = Secret::new(value);
    if secret.is_empty() {
        return Err(format!(
            "{field}: {} gives an empty value",
            describe(reference).trim_start_matches("from ")
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_loses_one_trailing_newline_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        let reference = SecretRef {
            env: None,
            file: Some(path.display().to_string()),
        };
        assert_eq!(resolve("secret", &reference).unwrap().expose(), "hunter2");
        std::fs::write(&path, "\n").unwrap();
        let err = resolve("secret", &reference).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let missing = SecretRef {
            env: Some("MAILPLANE_TEST_SURELY_UNSET_VARIABLE".into()),
            file: None,
        };
        let err = resolve("secret", &missing).unwrap_err();
        assert!(
            err.contains("MAILPLANE_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{err}"
        );
    }
}
