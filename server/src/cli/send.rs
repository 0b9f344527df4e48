//! `mailplane send`: hand a message to the outbox. The server builds it under the account's
//! settings, stores it durably and delivers it; this command prints the stored message.

use super::{CliError, resource_name};
use clap::Args;
use mailplane_proto::v1 as pb;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `mailplane send` arguments.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// A To recipient (repeat for more). At least one of --to, --cc and --bcc is required.
    #[arg(long)]
    pub to: Vec<String>,
    /// A Cc recipient (repeat for more).
    #[arg(long)]
    pub cc: Vec<String>,
    /// A Bcc recipient, in the envelope only (repeat for more).
    #[arg(long)]
    pub bcc: Vec<String>,
    /// The subject.
    #[arg(long)]
    pub subject: String,
    /// The account: its code or accounts/CODE [default: the default account].
    #[arg(long)]
    pub account: Option<String>,
    /// The plain-text body.
    #[arg(
        long,
        conflicts_with = "body_file",
        required_unless_present_any = ["body_file", "html_file"]
    )]
    pub body: Option<String>,
    /// A file with the plain-text body ("-" reads standard input).
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// A file with the HTML body ("-" reads standard input), sent with or instead of the text.
    #[arg(long)]
    pub html_file: Option<PathBuf>,
    /// A file to attach (repeat for more); its type is guessed from the extension.
    #[arg(long)]
    pub attach: Vec<PathBuf>,
    /// An extra header, "X-Name: value" (repeat for more; only X-* names are allowed).
    #[arg(long)]
    pub header: Vec<String>,
    /// An idempotency key: the same key within 24 h returns the first message and sends
    /// nothing new.
    #[arg(long)]
    pub request_id: Option<String>,
    /// The From header, unless the account forces its settings.
    #[arg(long)]
    pub from: Option<String>,
    /// The Reply-To header, unless the account forces its settings.
    #[arg(long)]
    pub reply_to: Option<String>,
}

/// Whether `path` means standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The bytes of `path`, or of `stdin` for "-".
fn read_bytes(path: &Path, stdin: &mut impl Read) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let result = if is_stdin(path) {
        stdin.read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    result.map_err(|e| {
        let what = if is_stdin(path) {
            "standard input".to_owned()
        } else {
            path.display().to_string()
        };
        CliError::Usage(format!("cannot read {what}: {e}"))
    })?;
    Ok(bytes)
}

/// The UTF-8 text of `path`, or of `stdin` for "-".
fn read_text(path: &Path, stdin: &mut impl Read) -> Result<String, CliError> {
    String::from_utf8(read_bytes(path, stdin)?)
        .map_err(|_| CliError::Usage(format!("{} is not UTF-8 text", path.display())))
}

/// The MIME type of a file, guessed from its extension for a few common types;
/// `application/octet-stream` for anything else.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "htm" | "html" => "text/html",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        _ => "application/octet-stream",
    }
}

/// Parses `X-Name: value` into a header.
fn header(given: &str) -> Result<pb::MessageHeader, CliError> {
    match given.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => Ok(pb::MessageHeader {
            name: name.trim().to_owned(),
            value: value.trim().to_owned(),
        }),
        _ => Err(CliError::Usage(format!(
            "--header {given:?}: write it as \"X-Name: value\""
        ))),
    }
}

/// The request `mailplane send` makes; files named "-" are read from `stdin`.
pub fn request(args: SendArgs, stdin: &mut impl Read) -> Result<pb::SendMessageRequest, CliError> {
    if args.body_file.as_deref().is_some_and(is_stdin)
        && args.html_file.as_deref().is_some_and(is_stdin)
    {
        return Err(CliError::Usage(
            "only one of --body-file and --html-file can read standard input".into(),
        ));
    }
    let text_body = match (args.body, &args.body_file) {
        (Some(body), _) => body,
        (None, Some(path)) => read_text(path, stdin)?,
        (None, None) => String::new(),
    };
    let html_body = match &args.html_file {
        Some(path) => read_text(path, stdin)?,
        None => String::new(),
    };
    let mut attachments = Vec::with_capacity(args.attach.len());
    for path in &args.attach {
        if is_stdin(path) {
            return Err(CliError::Usage(
                "--attach needs a file name, not standard input".into(),
            ));
        }
        attachments.push(pb::MessageAttachment {
            filename: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            content_type: content_type(path).to_owned(),
            content: read_bytes(path, stdin)?,
        });
    }
    let headers = args
        .header
        .iter()
        .map(|h| header(h))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pb::SendMessageRequest {
        message: Some(pb::Message {
            account: args
                .account
                .map(|a| resource_name("accounts", &a))
                .unwrap_or_default(),
            to: args.to,
            cc: args.cc,
            bcc: args.bcc,
            subject: args.subject,
            text_body,
            html_body,
            attachments,
            headers,
            from: args.from.unwrap_or_default(),
            reply_to: args.reply_to.unwrap_or_default(),
            ..Default::default()
        }),
        request_id: args.request_id.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_and_headers() {
        assert_eq!(content_type(Path::new("a/report.CSV")), "text/csv");
        assert_eq!(content_type(Path::new("x.pdf")), "application/pdf");
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
        let h = header("X-Ticket:  42 ").unwrap();
        assert_eq!((h.name.as_str(), h.value.as_str()), ("X-Ticket", "42"));
        assert!(header("no colon").is_err());
        assert!(header(": v").is_err());
    }
}
