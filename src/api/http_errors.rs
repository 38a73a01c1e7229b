//! HTTP rejections counted by kind (`camgate_http_errors_total{kind}`,
//! issue 13 scope 5): every 4xx the API answers, whichever handler or
//! extractor produced it (RFC 9110 §15.5 names the codes).

use axum::http::StatusCode;

/// Every `kind` label value, for pre-registering the series.
pub const KINDS: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "conflict",
    "too_large",
    "unsupported_media_type",
    "unprocessable",
    "too_many_requests",
    "other",
];

/// The `kind` of a client-error status; `None` for any other status.
pub fn kind(status: StatusCode) -> Option<&'static str> {
    if !status.is_client_error() {
        return None;
    }
    Some(match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        _ => "other",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_errors_have_a_kind_and_each_kind_is_catalogued() {
        assert_eq!(kind(StatusCode::OK), None);
        assert_eq!(kind(StatusCode::BAD_GATEWAY), None);
        assert_eq!(kind(StatusCode::NOT_FOUND), Some("not_found"));
        assert_eq!(kind(StatusCode::IM_A_TEAPOT), Some("other"));
        for code in 400..500u16 {
            if let Some(k) = StatusCode::from_u16(code).ok().and_then(kind) {
                assert!(KINDS.contains(&k), "{code} → {k}");
            }
        }
    }
}
