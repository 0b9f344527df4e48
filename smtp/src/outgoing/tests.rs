use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;

fn base() -> OutgoingMessage {
    OutgoingMessage {
        sender: "Acme <noreply@acme.example>".into(),
        to: vec!["bob@example.net".into()],
        subject: "Hello".into(),
        text_body: Some("Hello Bob\n".into()),
        ..OutgoingMessage::default()
    }
}

fn text(m: &BuiltMessage) -> String {
    String::from_utf8(m.bytes.clone()).unwrap()
}

/// The top-level header block, with a CRLF at its end.
fn headers(t: &str) -> &str {
    &t[..t.find("\r\n\r\n").unwrap() + 2]
}

fn build(m: &OutgoingMessage) -> String {
    text(&m.build().unwrap())
}

/// The body of the MIME part whose headers contain `marker`, up to the next boundary.
fn part_body(t: &str, marker: &str) -> String {
    let at = t
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {t}"));
    let start = at + t[at..].find("\r\n\r\n").unwrap() + 4;
    t[start..]
        .split("\r\n")
        .take_while(|line| !line.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn assert_crlf_only(bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            assert_eq!(bytes[i - 1], b'\r', "bare LF at {i}");
        }
        if *b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
}

#[test]
fn account_headers_reply_to_and_read_confirmation() {
    let t = build(&base());
    let h = headers(&t);
    assert!(h.contains("From: Acme <noreply@acme.example>\r\n"), "{h}");
    assert!(h.contains("To: bob@example.net\r\n"), "{h}");
    assert!(!h.contains("Reply-To"), "{h}");
    assert!(!h.contains("Disposition-Notification-To"), "{h}");

    let mut m = base();
    m.reply_to = Some("Support <support@acme.example>".into());
    m.disposition_notification_to = Some("receipts@acme.example".into());
    let t = build(&m);
    let h = headers(&t);
    assert!(
        h.contains("Reply-To: Support <support@acme.example>\r\n"),
        "{h}"
    );
    assert!(
        h.contains("Disposition-Notification-To: receipts@acme.example\r\n"),
        "{h}"
    );
}

#[test]
fn return_path_is_the_envelope_sender_only() {
    let built = base().build().unwrap();
    assert_eq!(built.envelope_from, "noreply@acme.example");
    let mut m = base();
    m.return_path = Some("bounces@acme.example".into());
    let built = m.build().unwrap();
    assert_eq!(built.envelope_from, "bounces@acme.example");
    let t = text(&built);
    assert!(!t.to_ascii_lowercase().contains("return-path"), "{t}");
    assert!(!t.contains("bounces@"), "{t}");
    m.return_path = Some("not an address".into());
    assert!(matches!(
        m.build(),
        Err(OutgoingError::Address {
            field: "return_path",
            ..
        })
    ));
}

#[test]
fn footer_in_the_text_and_the_html_part() {
    let mut m = base();
    m.html_body = Some("<html><body><p>Hello Bob</p>\n</BODY></html>".into());
    m.footer = Some("Sent by <Acme> & co\nline two".into());
    let t = build(&m);
    assert!(t.contains("Content-Type: multipart/alternative;"), "{t}");
    let plain = part_body(&t, "text/plain");
    assert_eq!(
        plain,
        "Hello Bob\r\n\r\nSent by <Acme> & co\r\nline two\r\n"
    );
    let html = part_body(&t, "text/html");
    assert_eq!(
        html,
        "<html><body><p>Hello Bob</p>\r\n<p>Sent by &lt;Acme&gt; &amp; co<br>\r\nline two</p>\r\n</BODY></html>\r\n"
    );

    // Without `</body>`, the footer goes at the end.
    m.html_body = Some("<b>Hi</b>".into());
    let t = build(&m);
    assert_eq!(
        part_body(&t, "text/html"),
        "<b>Hi</b>\r\n<p>Sent by &lt;Acme&gt; &amp; co<br>\r\nline two</p>\r\n"
    );
    // Without a footer, bodies are as given.
    m.footer = None;
    let t = build(&m);
    assert_eq!(part_body(&t, "text/plain"), "Hello Bob\r\n");
    assert_eq!(part_body(&t, "text/html"), "<b>Hi</b>\r\n");
}

#[test]
fn charset_label_on_every_text_part() {
    let mut m = base();
    m.html_body = Some("<p>Hi</p>".into());
    m.charset = Some("ISO-8859-1".into());
    let lower = build(&m).to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/plain; charset=iso-8859-1\r\n"),
        "{lower}"
    );
    assert!(
        lower.contains("content-type: text/html; charset=iso-8859-1\r\n"),
        "{lower}"
    );
    m.charset = None;
    assert!(
        build(&m)
            .to_ascii_lowercase()
            .contains("content-type: text/plain; charset=utf-8\r\n")
    );
    m.charset = Some("utf-8\r\nX-Evil: 1".into());
    assert!(matches!(m.build(), Err(OutgoingError::Charset(_))));
}

#[test]
fn plain_text_only_drops_html_and_refuses_html_only() {
    let mut m = base();
    m.plain_text_only = true;
    m.html_body = Some("<p>Hi</p>".into());
    let t = build(&m);
    assert!(!t.contains("text/html"), "{t}");
    assert!(!t.contains("multipart"), "{t}");
    assert!(t.contains("Content-Type: text/plain"), "{t}");

    m.text_body = None;
    let err = m.build().unwrap_err();
    assert_eq!(err, OutgoingError::HtmlOnlyOnPlainTextAccount);
    assert!(err.is_account_setting());
    assert!(err.to_string().contains("html_body"), "{err}");

    // An HTML-only message is fine on an account that allows HTML.
    m.plain_text_only = false;
    let t = build(&m);
    assert!(t.contains("Content-Type: text/html"), "{t}");
    assert!(!t.contains("text/plain"), "{t}");
}

#[test]
fn force_settings_refuses_overrides_and_without_it_they_apply() {
    let mut m = base();
    m.reply_to = Some("support@acme.example".into());
    m.from_override = Some("Sales <sales@shop.example>".into());
    m.reply_to_override = Some("orders@shop.example".into());
    let built = m.build().unwrap();
    let t = text(&built);
    let h = headers(&t);
    assert!(h.contains("From: Sales <sales@shop.example>\r\n"), "{h}");
    assert!(h.contains("Reply-To: orders@shop.example\r\n"), "{h}");
    assert!(!h.contains("acme.example"), "{h}");
    assert_eq!(built.envelope_from, "sales@shop.example");
    assert!(built.message_id.ends_with("@shop.example>"), "{built:?}");

    m.force_settings = true;
    let err = m.build().unwrap_err();
    assert_eq!(err, OutgoingError::OverrideRefused { field: "from" });
    assert!(err.is_account_setting());
    assert!(err.to_string().starts_with("from:"), "{err}");
    m.from_override = None;
    assert_eq!(
        m.build().unwrap_err(),
        OutgoingError::OverrideRefused { field: "reply_to" }
    );
    m.reply_to_override = None;
    let h = build(&m);
    assert!(h.contains("From: Acme <noreply@acme.example>\r\n"), "{h}");
    assert!(h.contains("Reply-To: support@acme.example\r\n"), "{h}");
}

#[test]
fn bcc_only_in_the_envelope_cc_in_the_headers() {
    let mut m = base();
    m.cc = vec!["Carol <carol@example.net>".into()];
    m.bcc = vec!["dave@example.org".into()];
    let built = m.build().unwrap();
    let t = text(&built);
    assert!(t.contains("Cc: Carol <carol@example.net>\r\n"), "{t}");
    assert!(
        !t.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{t}"
    );
    assert!(!t.contains("dave"), "{t}");
    assert_eq!(
        built.envelope_to,
        ["bob@example.net", "carol@example.net", "dave@example.org"]
    );

    // Bcc alone: no To or Cc header, the envelope still has the recipient.
    let mut m = base();
    m.to.clear();
    m.bcc = vec!["dave@example.org".into()];
    let built = m.build().unwrap();
    let t = text(&built);
    assert!(!t.contains("dave"), "{t}");
    assert!(!headers(&t).contains("\r\nTo:"), "{t}");
    assert_eq!(built.envelope_to, ["dave@example.org"]);
}

#[test]
fn duplicate_recipients_once_in_the_envelope() {
    let mut m = base();
    m.to = vec!["bob@example.net".into(), "Bob <bob@EXAMPLE.net>".into()];
    m.cc = vec!["bob@example.net".into(), "carol@example.net".into()];
    m.bcc = vec!["carol@example.net".into(), "Bob@example.net".into()];
    let built = m.build().unwrap();
    // The local part is case-sensitive (RFC 5321), the domain is not.
    assert_eq!(
        built.envelope_to,
        ["bob@example.net", "carol@example.net", "Bob@example.net"]
    );
}

#[test]
fn recipient_count_limits() {
    let mut m = base();
    m.to.clear();
    assert_eq!(m.build().unwrap_err(), OutgoingError::NoRecipient);
    m.to = (0..50).map(|i| format!("to{i}@example.net")).collect();
    m.cc = (0..30).map(|i| format!("cc{i}@example.net")).collect();
    m.bcc = (0..20).map(|i| format!("bcc{i}@example.net")).collect();
    assert_eq!(m.build().unwrap().envelope_to.len(), 100);
    m.bcc.push("one-more@example.net".into());
    let err = m.build().unwrap_err();
    assert_eq!(err, OutgoingError::TooManyRecipients { max: 100, got: 101 });
    assert!(err.to_string().contains("at most 100"), "{err}");
    assert!(!err.is_account_setting());
}

#[test]
fn invalid_addresses_name_their_field() {
    let mut m = base();
    m.cc = vec!["not an address".into()];
    let err = m.build().unwrap_err();
    assert!(
        matches!(&err, OutgoingError::Address { field: "cc", value, .. } if value == "not an address"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("cc: invalid address"), "{err}");
    let mut m = base();
    m.sender = "a@acme.example\r\nBcc: evil@example.com".into();
    assert!(matches!(
        m.build(),
        Err(OutgoingError::Address {
            field: "sender",
            ..
        })
    ));
    let mut m = base();
    m.to = vec!["bob@example.net\nBcc: evil@example.com".into()];
    assert!(matches!(
        m.build(),
        Err(OutgoingError::Address { field: "to", .. })
    ));
}

#[test]
fn extra_headers_only_x_names_without_line_breaks() {
    let mut m = base();
    m.extra_headers = vec![
        ("X-Campaign".into(), "spring-2026".into()),
        ("x-tag_2".into(), "Grüße".into()),
    ];
    let t = build(&m);
    let h = headers(&t);
    assert!(h.contains("X-Campaign: spring-2026\r\n"), "{h}");
    assert!(h.contains("x-tag_2: =?utf-8?"), "{h}");
    assert!(t.is_ascii());

    for name in [
        "Received",
        "Bcc",
        "X-Bad\r\nInjected",
        "X-",
        "X-a b",
        "X-a:b",
        "From",
    ] {
        let mut m = base();
        m.extra_headers = vec![(name.into(), "v".into())];
        assert_eq!(
            m.build().unwrap_err(),
            OutgoingError::HeaderNotAllowed { name: name.into() },
            "{name:?}"
        );
    }
    let mut m = base();
    m.extra_headers = vec![("X-Tag".into(), "a".into()), ("x-TAG".into(), "b".into())];
    let err = m.build().unwrap_err();
    assert_eq!(
        err,
        OutgoingError::DuplicateHeader {
            name: "x-TAG".into()
        }
    );
    assert!(err.to_string().starts_with("headers: "), "{err}");
    let mut m = base();
    m.extra_headers = vec![("X-Ok".into(), "a\r\nBcc: evil@example.com".into())];
    let err = m.build().unwrap_err();
    assert_eq!(
        err,
        OutgoingError::HeaderValue {
            field: "headers[X-Ok]".into()
        }
    );
    let mut m = base();
    m.subject = "hi\r\nBcc: evil@example.com".into();
    assert_eq!(
        m.build().unwrap_err(),
        OutgoingError::HeaderValue {
            field: "subject".into()
        }
    );
}

#[test]
fn a_body_is_required() {
    let mut m = base();
    m.text_body = None;
    assert_eq!(m.build().unwrap_err(), OutgoingError::NoBody);
    m.text_body = Some(String::new());
    m.html_body = Some(String::new());
    assert_eq!(m.build().unwrap_err(), OutgoingError::NoBody);
}

fn all_bytes(len: usize) -> Vec<u8> {
    // Every byte value, in a scrambled order.
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

#[test]
fn attachments_decode_to_the_same_bytes() {
    let pdf = all_bytes(10_000);
    let note = b"plain\r\nnote\n".to_vec();
    let mut m = base();
    m.html_body = Some("<p>Hi</p>".into());
    m.attachments = vec![
        Attachment {
            filename: "data.bin".into(),
            content_type: "application/octet-stream".into(),
            content: pdf.clone(),
        },
        Attachment {
            filename: "Überweisung für Köln.txt".into(),
            content_type: String::new(),
            content: note.clone(),
        },
    ];
    let built = m.build().unwrap();
    let t = text(&built);
    assert_crlf_only(&built.bytes);
    assert!(t.is_ascii());
    let mixed = t.find("Content-Type: multipart/mixed;").unwrap();
    let alternative = t.find("Content-Type: multipart/alternative;").unwrap();
    assert!(mixed < alternative, "{t}");
    assert!(
        t.contains("Content-Disposition: attachment; filename=\"data.bin\""),
        "{t}"
    );
    let data = part_body(&t, "filename=\"data.bin\"");
    assert_eq!(STANDARD.decode(data.replace("\r\n", "")).unwrap(), pdf);
    // RFC 2231 for the name that is not ASCII; the default content type.
    let at = t.find("filename*").unwrap_or_else(|| panic!("{t}"));
    let part_headers = &t[at..at + t[at..].find("\r\n\r\n").unwrap()];
    assert!(
        part_headers.contains("Content-Type: application/octet-stream"),
        "{t}"
    );
    assert!(t[at..].contains("%C3%9C"), "{t}");
    let decoded = STANDARD
        .decode(part_body(&t, "filename*").replace("\r\n", ""))
        .unwrap();
    assert_eq!(decoded, note);
    for part in t.split("Content-Disposition: attachment").skip(1) {
        let cte = part.find("Content-Transfer-Encoding: base64");
        assert!(cte.is_some(), "{part}");
    }

    // With the text part only, multipart/mixed holds it directly.
    m.html_body = None;
    let t = build(&m);
    assert!(t.contains("Content-Type: multipart/mixed;"), "{t}");
    assert!(!t.contains("multipart/alternative"), "{t}");
    assert_eq!(part_body(&t, "text/plain"), "Hello Bob\r\n");
}

#[test]
fn attachment_names_and_types_are_checked() {
    let attach = |filename: &str, content_type: &str| {
        let mut m = base();
        m.attachments = vec![
            Attachment {
                filename: "ok.txt".into(),
                content_type: "text/plain".into(),
                content: b"ok".to_vec(),
            },
            Attachment {
                filename: filename.into(),
                content_type: content_type.into(),
                content: b"x".to_vec(),
            },
        ];
        m.build()
    };
    assert!(attach("a.pdf", "application/pdf").is_ok());
    // Quotes in a name are escaped inside the quoted string, not a way out of it.
    let t = text(&attach("my \"quoted\"; name=x.txt", "text/plain; charset=utf-8").unwrap());
    assert!(
        t.contains(
            "Content-Disposition: attachment; filename=\"my \\\"quoted\\\"; name=x.txt\"\r\n"
        ),
        "{t}"
    );
    assert_eq!(
        attach(" ", "text/plain").unwrap_err(),
        OutgoingError::Filename {
            index: 1,
            reason: "must not be empty"
        }
    );
    assert!(matches!(
        attach("a\r\nb.txt", "text/plain"),
        Err(OutgoingError::Filename { index: 1, .. })
    ));
    for bad in ["not a type", "text/plain\r\nX-Evil: 1", "multipart/mixed"] {
        let err = attach("a.txt", bad).unwrap_err();
        assert!(
            matches!(&err, OutgoingError::ContentType { index: 1, value, .. } if value == bad),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().starts_with("attachments[1].content_type"));
    }
}

#[test]
fn crlf_only_date_and_message_id_on_every_message() {
    let mut m = base();
    m.text_body = Some("one\ntwo\rthree\r\n.\nfour".into());
    m.html_body = Some("<p>a</p>\n<p>b</p>\r".into());
    m.footer = Some("foot\rer\n".into());
    m.subject = "Grüße aus Köln".into();
    let built = m.build().unwrap();
    assert_crlf_only(&built.bytes);
    let t = text(&built);
    assert!(t.is_ascii(), "{t}");
    let h = headers(&t);
    assert!(h.contains("\r\nDate: ") || h.starts_with("Date: "), "{h}");
    assert!(
        h.contains(&format!("Message-ID: {}\r\n", built.message_id)),
        "{h}"
    );
    assert!(built.message_id.starts_with('<'));
    assert!(built.message_id.ends_with("@acme.example>"));
    assert!(h.contains("MIME-Version: 1.0\r\n"), "{h}");
    assert!(h.contains("Subject: =?utf-8?"), "{h}");
    assert_eq!(built.size(), built.bytes.len());
    let other = m.build().unwrap();
    assert_ne!(other.message_id, built.message_id);
}

#[test]
fn estimated_size_bounds_the_built_size() {
    let mut heavy = base();
    heavy.text_body = Some("Grüße = ü\n".repeat(2_000));
    heavy.html_body = Some(format!(
        "<html><body>{}</body></html>",
        "<b>ä=ö</b>".repeat(3_000)
    ));
    heavy.footer = Some("<<\"&'>>\n".repeat(10));
    heavy.subject = "Ünïcödé ".repeat(20);
    heavy.cc = (0..40)
        .map(|i| format!("Ä Person {i} <p{i}@example.net>"))
        .collect();
    heavy.extra_headers = vec![("X-Note".into(), "ö".repeat(200))];
    let mut attached = base();
    attached.attachments = vec![Attachment {
        filename: "ß".repeat(30),
        content_type: "application/pdf".into(),
        content: all_bytes(300_000),
    }];
    for m in [base(), heavy, attached.clone()] {
        let size = m.build().unwrap().size();
        let estimate = m.estimated_size();
        assert!(estimate >= size, "estimate {estimate} < size {size}");
    }
    // Close enough to refuse large attachments early.
    let size = attached.build().unwrap().size();
    assert!(attached.estimated_size() < size + size / 20 + 4096);
}

#[test]
fn size_limit_check() {
    assert_eq!(check_message_size(10, 10), Ok(()));
    let err =
        check_message_size(DEFAULT_MAX_MESSAGE_SIZE + 1, DEFAULT_MAX_MESSAGE_SIZE).unwrap_err();
    assert_eq!(
        err,
        OutgoingError::TooLarge {
            size: 26_214_401,
            limit: 26_214_400
        }
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
}
