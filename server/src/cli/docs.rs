//! `mailplane completion SHELL` and `mailplane man --dir DIR`: shell completions and man
//! pages, generated from the same clap definitions as the commands themselves.

use super::{Cli, CliError};
use clap::CommandFactory as _;
use std::io::Write;
use std::path::Path;

/// Writes the completion script for `shell` to `out` (rendered first: the generator panics
/// on a write error, such as a closed pipe).
pub fn completion(shell: clap_complete::Shell, out: &mut impl Write) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mailplane", &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// The man pages, as (file name, roff): `mailplane.1`, and one per subcommand at every level
/// (`mailplane-accounts-create.1`), as git and cargo name theirs.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let mut root = Cli::command();
    root.build();
    let mut pages = Vec::new();
    render(&root, "mailplane", &mut pages)?;
    Ok(pages)
}

fn render(
    command: &clap::Command,
    name: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), CliError> {
    let page = command.clone().name(name.to_owned());
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff)?;
    pages.push((format!("{name}.1"), roff));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        render(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

/// Writes the man pages into `dir` (created if needed); returns how many.
pub fn write_man_pages(dir: &Path) -> Result<usize, CliError> {
    std::fs::create_dir_all(dir)?;
    let pages = man_pages()?;
    for (file, roff) in &pages {
        std::fs::write(dir.join(file), roff)?;
    }
    Ok(pages.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_man_page() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "mailplane.1",
            "mailplane-serve.1",
            "mailplane-accounts.1",
            "mailplane-accounts-create.1",
            "mailplane-credentials-update.1",
            "mailplane-connectors-get.1",
            "mailplane-messages-list.1",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let create = &pages
            .iter()
            .find(|(n, _)| n == "mailplane-credentials-create.1")
            .unwrap()
            .1;
        let text = String::from_utf8_lossy(create);
        assert!(
            text.contains(".TH mailplane-credentials-create 1"),
            "{text}"
        );
        assert!(text.contains("token\\-source"), "{text}");
    }

    /// The checked-in pages in `docs/man` are what `mailplane man --dir docs/man` writes today:
    /// a changed flag or help text means regenerating them.
    #[test]
    fn the_checked_in_man_pages_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man");
        let pages = man_pages().unwrap();
        let regenerate = "regenerate them: cargo run -p mailplane-server -- man --dir docs/man";
        for (file, roff) in &pages {
            let checked_in = std::fs::read(dir.join(file))
                .unwrap_or_else(|e| panic!("docs/man/{file}: {e}; {regenerate}"));
            assert!(
                checked_in == *roff,
                "docs/man/{file} is out of date; {regenerate}"
            );
        }
        let on_disk = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            on_disk,
            pages.len(),
            "docs/man holds pages of commands that are gone; remove it and {regenerate}"
        );
    }

    #[test]
    fn completions_cover_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            completion(shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            for word in ["accounts", "credentials", "connectors", "token-source"] {
                assert!(text.contains(word), "{shell:?} lacks {word}");
            }
        }
    }
}
