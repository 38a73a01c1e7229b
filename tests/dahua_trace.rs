//! Every SIP message in the real Dahua IPC capture
//! (`dahua_ipc_sip_trace.txt`, a Wireshark text export) parses: the SIP
//! text is reassembled from the export's tree (request/status line, header
//! lines, body — SDP rebuilt from its dissected fields), then read by
//! rsipstack, our request facts, the MANSCDP decoder and the GB SDP parser.

use camgate::gb28181::manscdp;
use camgate::gb28181::reports;
use camgate::gb28181::sdp::GbSdp;
use camgate::sip::request::RequestFacts;
use rsipstack::sip::SipMessage;

struct Extracted {
    frame: String,
    text: String,
    is_sdp: bool,
    body: String,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Split the export into SIP messages.
fn extract(export: &str) -> Vec<Extracted> {
    let lines: Vec<&str> = export.lines().collect();
    let mut out = Vec::new();
    let mut frame = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.strip_prefix("Frame ") {
            frame = rest.split(':').next().unwrap_or_default().to_owned();
        }
        if !line.starts_with("Session Initiation Protocol") {
            i += 1;
            continue;
        }
        i += 1;
        let Some(first) = lines.get(i).and_then(|l| {
            l.trim()
                .strip_prefix("Request-Line: ")
                .or_else(|| l.trim().strip_prefix("Status-Line: "))
        }) else {
            continue;
        };
        let mut headers = Vec::new();
        let mut body_lines = Vec::new();
        let mut is_sdp = false;
        i += 1;
        // Headers: the 8-space lines under "Message Header"; deeper lines
        // are Wireshark's own dissection of a header.
        while i < lines.len() && !lines[i].trim().is_empty() {
            let l = lines[i];
            if l.trim() == "Message Body" {
                i += 1;
                break;
            }
            if indent(l) == 8 {
                headers.push(l.trim().to_owned());
            }
            i += 1;
        }
        if i < lines.len() && lines[i].trim() == "Session Description Protocol" {
            is_sdp = true;
            i += 1;
            while i < lines.len() && !lines[i].trim().is_empty() {
                let l = lines[i];
                // `Name (x): value` at the SDP field level.
                if indent(l) == 12
                    && let Some(open) = l.find(" (")
                    && let Some(close) = l[open..].find("): ")
                {
                    let key = &l[open + 2..open + close];
                    let value = &l[open + close + 3..];
                    body_lines.push(format!("{key}={value}"));
                }
                i += 1;
            }
        } else {
            while i < lines.len() && !lines[i].trim().is_empty() && indent(lines[i]) >= 8 {
                let l = lines[i].trim_start();
                let l = l
                    .strip_suffix("\\r\\n")
                    .or_else(|| l.strip_suffix("\\n"))
                    .unwrap_or(l);
                body_lines.push(l.to_owned());
                i += 1;
            }
        }
        let body = if body_lines.is_empty() {
            String::new()
        } else {
            body_lines.join("\r\n") + "\r\n"
        };
        let mut text = format!("{first}\r\n");
        for h in &headers {
            if h.to_ascii_lowercase().starts_with("content-length") {
                continue;
            }
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        out.push(Extracted {
            frame: frame.clone(),
            text,
            is_sdp,
            body,
        });
    }
    out
}

#[test]
fn every_sip_message_in_the_dahua_trace_parses() {
    let Some(path) = camgate::testdata::file("dahua_ipc_sip_trace.txt") else {
        return;
    };
    let export = std::fs::read_to_string(path).expect("read trace");
    let sections = export.matches("\nSession Initiation Protocol").count();
    let messages = extract(&export);
    assert_eq!(messages.len(), sections, "every SIP section extracted");
    assert!(messages.len() >= 80, "only {} messages", messages.len());

    let (mut requests, mut responses, mut manscdp_bodies, mut sdps) = (0, 0, 0, 0);
    for m in &messages {
        let parsed = SipMessage::try_from(m.text.as_str())
            .unwrap_or_else(|e| panic!("frame {}: {e}\n{}", m.frame, m.text));
        match &parsed {
            SipMessage::Request(req) => {
                requests += 1;
                let facts = RequestFacts::from_request(req)
                    .unwrap_or_else(|e| panic!("frame {}: {e}\n{}", m.frame, m.text));
                assert_eq!(facts.from_user.len(), 20, "frame {}", m.frame);
                // Dahua writes the platform as IP:port after the `@`; the
                // request URI's user is still the addressee's id.
                assert!(
                    facts.request_uri.contains("3402000000")
                        || facts.request_uri.contains("192.168.28."),
                    "{}",
                    facts.request_uri
                );
            }
            SipMessage::Response(_) => responses += 1,
        }
        if m.body.is_empty() {
            continue;
        }
        if m.is_sdp {
            let sdp = GbSdp::parse(&m.body)
                .unwrap_or_else(|e| panic!("frame {}: SDP {e}\n{}", m.frame, m.body));
            assert!(sdp.video().is_some(), "frame {}", m.frame);
            sdps += 1;
        } else if m.body.contains("<?xml") {
            let msg = manscdp::decode_body(m.body.as_bytes())
                .unwrap_or_else(|e| panic!("frame {}: MANSCDP {e}\n{}", m.frame, m.body));
            let tree = manscdp::decode_tree(m.body.as_bytes()).unwrap();
            reports::classify(&tree).unwrap_or_else(|e| panic!("frame {}: report {e}", m.frame));
            assert!(!msg.cmd_type().is_empty());
            manscdp_bodies += 1;
        }
    }
    assert!(requests >= 40 && responses >= 40, "{requests} {responses}");
    assert!(manscdp_bodies >= 35, "{manscdp_bodies}");
    assert!(sdps >= 2, "{sdps}");
}
