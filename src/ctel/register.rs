//! HTTP registration (手机看店 spec V1.3 §7.2.1) and the group-platform
//! redirect (§5): the device POSTs `REGISTER_REQ` (or `REDIRECT_REQ`) as
//! `text/xml` and learns where the FA F5 link is.
//!
//! Sans-IO: [`decide_register`] maps a request and the allow-list to a
//! response; the axum handler in `api/ctel.rs` only moves bytes.

use serde::{Deserialize, Serialize};

use super::config::CtelConfig;

/// Largest registration body read; real ones are a few hundred bytes.
pub const MAX_REGISTER_BODY: usize = 8 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "REGISTER_REQ")]
pub struct RegisterReq {
    #[serde(rename = "ManufacturerNo", default)]
    pub manufacturer_no: String,
    #[serde(rename = "Mode", default)]
    pub mode: String,
    /// 1 IPC, 2 DVR, 3 NVR.
    #[serde(rename = "DevType", default)]
    pub dev_type: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "DevKey")]
    pub dev_key: String,
}

/// Result: 0 ok, 1 unknown device, 2 wrong key, 3 firmware not supported,
/// 255 other.
pub const REGISTER_OK: u8 = 0;
pub const REGISTER_UNKNOWN_DEVICE: u8 = 1;
pub const REGISTER_WRONG_KEY: u8 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "REGISTER_RES")]
pub struct RegisterRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "NatIP", default)]
    pub nat_ip: String,
    #[serde(rename = "NatPort", default)]
    pub nat_port: u16,
    #[serde(rename = "BackupNatIP", default)]
    pub backup_nat_ip: String,
    #[serde(rename = "BackupNatPort", default)]
    pub backup_nat_port: u16,
    #[serde(rename = "TurnIP", default)]
    pub turn_ip: String,
    #[serde(rename = "TurnPort", default)]
    pub turn_port: u16,
    #[serde(rename = "BackupTurnIP", default)]
    pub backup_turn_ip: String,
    #[serde(rename = "BackupTurnPort", default)]
    pub backup_turn_port: u16,
    #[serde(rename = "FtpIP", default)]
    pub ftp_ip: String,
    #[serde(rename = "FtpPort", default)]
    pub ftp_port: u16,
    #[serde(rename = "FtpAccount", default)]
    pub ftp_account: String,
    #[serde(rename = "FtpPassword", default)]
    pub ftp_password: String,
    /// `YYYYMMDDHHMMSS`.
    #[serde(rename = "Time", default)]
    pub time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "REDIRECT_REQ")]
pub struct RedirectReq {
    #[serde(rename = "ManufacturerNo", default)]
    pub manufacturer_no: String,
    #[serde(rename = "Mode", default)]
    pub mode: String,
    #[serde(rename = "DevType", default)]
    pub dev_type: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    #[serde(rename = "DevKey", default)]
    pub dev_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "REDIRECT_RES")]
pub struct RedirectRes {
    #[serde(rename = "Result")]
    pub result: u8,
    #[serde(rename = "DevID")]
    pub dev_id: String,
    /// Where the device registers: our own registration URL.
    #[serde(rename = "LcmsUrl")]
    pub lcms_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("registration body larger than {MAX_REGISTER_BODY} bytes")]
    TooLarge,
    #[error("unreadable registration XML: {0}")]
    Xml(String),
}

impl RegisterError {
    pub fn kind(&self) -> &'static str {
        match self {
            RegisterError::TooLarge => "too_large",
            RegisterError::Xml(_) => "xml",
        }
    }
}

pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RegisterError> {
    if body.len() > MAX_REGISTER_BODY {
        return Err(RegisterError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|e| RegisterError::Xml(e.to_string()))?;
    quick_xml::de::from_str(text).map_err(|e| RegisterError::Xml(e.to_string()))
}

pub fn to_xml<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs cannot fail; an empty body would be
    // refused by the device, which is the honest outcome if it ever did.
    let body = quick_xml::se::to_string(v).unwrap_or_default();
    format!(r#"<?xml version="1.0" encoding="UTF-8"?>{body}"#)
}

/// Where the link is, as told to devices.
pub struct LinkAddress {
    pub ip: String,
    pub port: u16,
}

/// Check the allow-list and answer (§7.2.1).
pub fn decide_register(
    config: &CtelConfig,
    req: &RegisterReq,
    link: &LinkAddress,
    time: &str,
) -> RegisterRes {
    let result = match config.key_for(&req.dev_id) {
        None => REGISTER_UNKNOWN_DEVICE,
        Some(key) if !crate::secret::ct_eq(key.as_bytes(), req.dev_key.as_bytes()) => {
            REGISTER_WRONG_KEY
        }
        Some(_) => REGISTER_OK,
    };
    let mut res = RegisterRes {
        result,
        dev_id: req.dev_id.clone(),
        time: time.to_owned(),
        ..Default::default()
    };
    if result == REGISTER_OK {
        res.nat_ip = link.ip.clone();
        res.nat_port = link.port;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctel::config::CtelDeviceEntry;

    fn config() -> CtelConfig {
        CtelConfig {
            devices: vec![CtelDeviceEntry {
                dev_id: "81200000001".into(),
                dev_key: "secret".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn register_checks_the_allow_list() {
        let link = LinkAddress {
            ip: "10.1.1.1".into(),
            port: 8588,
        };
        let body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><REGISTER_REQ><ManufacturerNo>812</ManufacturerNo><Mode>IPC-1</Mode><DevType>1</DevType><DevID>81200000001</DevID><DevKey>secret</DevKey></REGISTER_REQ>";
        let req: RegisterReq = parse(body).unwrap();
        let res = decide_register(&config(), &req, &link, "20260101000000");
        assert_eq!(
            (res.result, res.nat_ip.as_str(), res.nat_port),
            (0, "10.1.1.1", 8588)
        );
        let wrong = RegisterReq {
            dev_key: "nope".into(),
            ..req.clone()
        };
        let res = decide_register(&config(), &wrong, &link, "t");
        assert_eq!((res.result, res.nat_port), (REGISTER_WRONG_KEY, 0));
        let unknown = RegisterReq {
            dev_id: "81200000009".into(),
            ..req
        };
        assert_eq!(
            decide_register(&config(), &unknown, &link, "t").result,
            REGISTER_UNKNOWN_DEVICE
        );
    }

    #[test]
    fn bodies_round_trip() {
        let res = RegisterRes {
            result: 0,
            dev_id: "81200000001".into(),
            nat_ip: "1.2.3.4".into(),
            nat_port: 8588,
            time: "20260101000000".into(),
            ..Default::default()
        };
        assert_eq!(parse::<RegisterRes>(to_xml(&res).as_bytes()).unwrap(), res);
        let rr = RedirectRes {
            result: 0,
            dev_id: "1".into(),
            lcms_url: "http://h/ctel/register".into(),
        };
        assert_eq!(parse::<RedirectRes>(to_xml(&rr).as_bytes()).unwrap(), rr);
        let rq = RedirectReq {
            dev_id: "81200000001".into(),
            dev_type: 1,
            ..Default::default()
        };
        assert_eq!(parse::<RedirectReq>(to_xml(&rq).as_bytes()).unwrap(), rq);
        assert_eq!(
            parse::<RegisterReq>(&vec![b' '; MAX_REGISTER_BODY + 1]).unwrap_err(),
            RegisterError::TooLarge
        );
    }
}
