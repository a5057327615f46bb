//! The few fields of an X.509 certificate (RFC 5280 §4.1) that the certificate check and
//! probe read, straight from its DER (X.690 §8, §10): a reader of 200 lines in place of a
//! general X.509 parser, which cost the binary about 0.15 MiB (the README's "Speed and
//! footprint"). Anything it cannot read is `None`; rustls, which serves the certificate,
//! checks it in full.

/// What the check reads of a certificate.
pub struct Cert<'a> {
    /// The issuer's Name, as DER (tag and length included).
    pub issuer: &'a [u8],
    /// The subject's Name, as DER (tag and length included).
    pub subject: &'a [u8],
    /// notBefore, in seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The subjectAltName's dNSName and iPAddress entries, in order.
    pub alt_names: Vec<AltName<'a>>,
    /// basicConstraints cA (RFC 5280 §4.2.1.9); false when the extension is absent.
    pub ca: bool,
}

/// One subjectAltName entry the check uses (RFC 5280 §4.2.1.6).
#[derive(Debug, PartialEq)]
pub enum AltName<'a> {
    /// A dNSName (IA5String).
    Dns(&'a str),
    /// An iPAddress: 4 bytes (IPv4) or 16 (IPv6).
    Ip(&'a [u8]),
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// id-ce-subjectAltName, 2.5.29.17, and id-ce-basicConstraints, 2.5.29.19.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The next element of `input`: its tag, its contents and the whole element; `input`
/// moves past it. Definite lengths only, as DER requires; `None` on anything else.
fn next<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8], &'a [u8])> {
    let whole = *input;
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers: no field read here has one
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (body, after) = rest.split_at(len);
    *input = after;
    Some((tag, body, &whole[..whole.len() - after.len()]))
}

/// The next element's contents, if its tag is `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    match next(input)? {
        (t, body, _) if t == tag => Some(body),
        _ => None,
    }
}

/// Reads a DER certificate; `None` when it is not one.
pub fn parse(der: &[u8]) -> Option<Cert<'_>> {
    let mut input = der;
    let mut cert = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut cert, SEQUENCE)?;
    if tbs.first() == Some(&0xa0) {
        next(&mut tbs)?; // version
    }
    expect(&mut tbs, 0x02)?; // serialNumber
    expect(&mut tbs, SEQUENCE)?; // signature
    let (SEQUENCE, _, issuer) = next(&mut tbs)? else {
        return None;
    };
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    let not_before = time(&mut validity)?;
    let not_after = time(&mut validity)?;
    let (SEQUENCE, _, subject) = next(&mut tbs)? else {
        return None;
    };
    expect(&mut tbs, SEQUENCE)?; // subjectPublicKeyInfo
    let mut parsed = Cert {
        issuer,
        subject,
        not_before,
        not_after,
        alt_names: Vec::new(),
        ca: false,
    };
    while let Some((tag, body, _)) = next(&mut tbs) {
        if tag != 0xa3 {
            continue; // issuerUniqueID, subjectUniqueID
        }
        let mut extensions = body;
        let mut extensions = expect(&mut extensions, SEQUENCE)?;
        while !extensions.is_empty() {
            let mut extension = expect(&mut extensions, SEQUENCE)?;
            let id = expect(&mut extension, OID)?;
            if extension.first() == Some(&BOOLEAN) {
                next(&mut extension)?; // critical
            }
            let mut value = expect(&mut extension, OCTET_STRING)?;
            if id == SUBJECT_ALT_NAME {
                let mut names = expect(&mut value, SEQUENCE)?;
                while let Some((tag, body, _)) = next(&mut names) {
                    match tag {
                        0x82 => parsed
                            .alt_names
                            .push(AltName::Dns(std::str::from_utf8(body).ok()?)),
                        0x87 => parsed.alt_names.push(AltName::Ip(body)),
                        _ => {}
                    }
                }
            } else if id == BASIC_CONSTRAINTS {
                let mut constraints = expect(&mut value, SEQUENCE)?;
                parsed.ca = matches!(next(&mut constraints), Some((BOOLEAN, [b], _)) if *b != 0);
            }
        }
    }
    Some(parsed)
}

/// A UTCTime or GeneralizedTime of the form RFC 5280 §4.1.2.5 requires (`YYMMDDHHMMSSZ`,
/// `YYYYMMDDHHMMSSZ`), in seconds since the Unix epoch.
fn time(input: &mut &[u8]) -> Option<i64> {
    let (tag, body, _) = next(input)?;
    let digits = body.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |s: &[u8]| s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    let (year, rest) = match (tag, digits.len()) {
        // UTCTime: 50 to 99 are 1950 to 1999 (RFC 5280 §4.1.2.5.1).
        (0x17, 12) => match number(&digits[..2]) {
            y if y >= 50 => (1900 + y, &digits[2..]),
            y => (2000 + y, &digits[2..]),
        },
        (0x18, 14) => (number(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| number(&rest[i..i + 2]));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// A Name (RFC 5280 §4.1.2.4) as `openssl x509 -issuer` and x509-parser print it
/// (`CN=R11, O=Let's Encrypt, C=US`); `None` when it is not one.
pub fn name_text(name: &[u8]) -> Option<String> {
    let mut input = name;
    let mut rdns = expect(&mut input, SEQUENCE)?;
    let mut text = String::new();
    while !rdns.is_empty() {
        let mut set = expect(&mut rdns, SET)?;
        let mut first = true;
        while !set.is_empty() {
            let mut attribute = expect(&mut set, SEQUENCE)?;
            let id = expect(&mut attribute, OID)?;
            let (tag, value, _) = next(&mut attribute)?;
            if !text.is_empty() {
                text.push_str(if first { ", " } else { " + " });
            }
            first = false;
            match ABBREVIATIONS.iter().find(|(oid, _)| *oid == id) {
                Some((_, abbreviation)) => text.push_str(abbreviation),
                None => text.push_str(&oid_text(id)),
            }
            text.push('=');
            text.push_str(&string_text(tag, value));
        }
    }
    Some(text)
}

/// The commonName values of a Name, in order.
pub fn common_names(name: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut input = name;
    let Some(mut rdns) = expect(&mut input, SEQUENCE) else {
        return names;
    };
    while let Some(mut set) = expect(&mut rdns, SET) {
        while let Some(mut attribute) = expect(&mut set, SEQUENCE) {
            if let (Some(COMMON_NAME), Some((tag, value, _))) =
                (expect(&mut attribute, OID), next(&mut attribute))
            {
                names.push(string_text(tag, value));
            }
        }
    }
    names
}

/// The attribute types a Name usually holds, with the abbreviations OpenSSL prints.
const ABBREVIATIONS: &[(&[u8], &str)] = &[
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x05], "serialNumber"),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "emailAddress",
    ),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "DC",
    ),
];

/// An OBJECT IDENTIFIER in dotted form (X.690 §8.19).
fn oid_text(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut arc = 0u64;
    for &b in oid {
        arc = arc << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        }
    }
    let mut text = match arcs.first() {
        Some(&first) if first < 80 => format!("{}.{}", first / 40, first % 40),
        Some(&first) => format!("2.{}", first - 80),
        None => return String::new(),
    };
    for arc in &arcs[1..] {
        text.push_str(&format!(".{arc}"));
    }
    text
}

/// An attribute value as text: the string types decoded, anything else in hex.
fn string_text(tag: u8, value: &[u8]) -> String {
    match tag {
        // UTF8String, NumericString, PrintableString, IA5String, GraphicString,
        // VisibleString, GeneralString
        0x0c | 0x12 | 0x13 | 0x16 | 0x19 | 0x1a | 0x1b => {
            String::from_utf8_lossy(value).into_owned()
        }
        // TeletexString: Latin-1 in practice
        0x14 => value.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE
        0x1e => char::decode_utf16(
            value
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => value.iter().map(|b| format!("{b:02X}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_seconds_since_the_epoch() {
        let t = |tag: u8, s: &str| {
            let mut der = vec![tag, s.len() as u8];
            der.extend_from_slice(s.as_bytes());
            time(&mut der.as_slice())
        };
        assert_eq!(t(0x17, "700101000000Z"), Some(0));
        assert_eq!(t(0x17, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(t(0x17, "500101000000Z"), Some(-631_152_000));
        assert_eq!(t(0x18, "20000229000000Z"), Some(951_782_400));
        assert_eq!(t(0x18, "20261122030005Z"), Some(1_795_316_405));
        assert_eq!(t(0x17, "261122030005"), None);
        assert_eq!(t(0x17, "261322030005Z"), None);
        assert_eq!(t(0x18, "261122030005Z"), None);
    }

    #[test]
    fn oids_are_dotted() {
        assert_eq!(oid_text(&[0x55, 0x1d, 0x11]), "2.5.29.17");
        assert_eq!(
            oid_text(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
    }

    /// The text the reader should give for a Name, built from x509-parser's reading of it.
    fn reference_name(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
        let rdns: Option<Vec<String>> = name
            .iter()
            .map(|rdn| {
                let attributes: Option<Vec<String>> = rdn
                    .iter()
                    .map(|a| {
                        let der = a.attr_type().as_bytes();
                        let abbreviation = ABBREVIATIONS
                            .iter()
                            .find(|(oid, _)| *oid == der)
                            .map_or_else(|| a.attr_type().to_id_string(), |(_, ab)| ab.to_string());
                        // Strings only: the two readers differ on TeletexString.
                        let value = a.as_str().ok().filter(|v| v.is_ascii())?;
                        Some(format!("{abbreviation}={value}"))
                    })
                    .collect();
                attributes.map(|a| a.join(" + "))
            })
            .collect();
        rdns.map(|r| r.join(", "))
    }

    /// Every certificate in this machine's trust store (several hundred, of every age and
    /// kind), read by this reader and by x509-parser: the same fields.
    #[test]
    fn agrees_with_x509_parser() {
        use x509_parser::extensions::GeneralName;
        let mut ders: Vec<Vec<u8>> = rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|c| c.to_vec())
            .collect();
        // And certificates with what a trust store rarely holds: IP addresses, a CN alone,
        // a leaf, UTCTime before 2000 and GeneralizedTime after 2049.
        for (sans, ca, from, to) in [
            (
                vec!["a.example.test", "127.0.0.1", "::1", "*.b.example.test"],
                false,
                1999,
                2051,
            ),
            (vec![], false, 2024, 2026),
            (vec!["example.test"], true, 1970, 2049),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(
                sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "wssd ✓ test");
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "wssd");
            params
                .distinguished_name
                .push(rcgen::DnType::CountryName, "CN");
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 12, 31);
            if ca {
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            }
            ders.push(params.self_signed(&key).unwrap().der().to_vec());
        }
        let mut names_compared = 0;
        for der in &ders {
            let Ok((_, reference)) = x509_parser::parse_x509_certificate(der) else {
                continue;
            };
            let cert = parse(der).expect("x509-parser reads it");
            assert_eq!(cert.issuer, reference.issuer().as_raw());
            assert_eq!(cert.subject, reference.subject().as_raw());
            assert_eq!(cert.not_before, reference.validity().not_before.timestamp());
            assert_eq!(cert.not_after, reference.validity().not_after.timestamp());
            let ca = matches!(reference.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
            assert_eq!(cert.ca, ca);
            let mut alt_names = Vec::new();
            if let Ok(Some(san)) = reference.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(dns) => alt_names.push(AltName::Dns(dns)),
                        GeneralName::IPAddress(ip) => alt_names.push(AltName::Ip(ip)),
                        _ => {}
                    }
                }
            }
            assert_eq!(cert.alt_names, alt_names);
            let cns: Vec<String> = reference
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string))
                .collect();
            assert_eq!(common_names(cert.subject), cns);
            if let Some(text) = reference_name(reference.issuer()) {
                assert_eq!(name_text(cert.issuer).as_deref(), Some(text.as_str()));
                names_compared += 1;
            }
        }
        assert!(names_compared >= 3, "{names_compared} names compared");
    }

    #[test]
    fn truncated_input_is_none() {
        let mut input: &[u8] = &[0x30, 0x05, 0x02, 0x01];
        assert!(next(&mut input).is_none());
        let mut input: &[u8] = &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff];
        assert!(next(&mut input).is_none());
        assert!(parse(&[]).is_none());
    }
}
