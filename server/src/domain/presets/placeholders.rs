//! The values presets ask for, and how each is checked.

use super::{PresetError, echo};
use mailplane_smtp::is_dns_name;

/// A value a preset asks for, written `{key}` in its host or token URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The Microsoft Entra tenant: its GUID or one of its DNS names.
    Tenant,
    /// The AWS region, e.g. `eu-west-1`.
    Region,
}

impl Placeholder {
    /// The key, as written in braces and in `placeholder_values`.
    pub const fn key(self) -> &'static str {
        match self {
            Placeholder::Tenant => "tenant",
            Placeholder::Region => "region",
        }
    }

    /// What the value is.
    pub const fn description(self) -> &'static str {
        match self {
            Placeholder::Tenant => {
                "the Microsoft Entra tenant: its ID (a GUID) or a verified domain name"
            }
            Placeholder::Region => "the AWS region where SES is set up",
        }
    }

    /// An example value.
    pub const fn example(self) -> &'static str {
        match self {
            Placeholder::Tenant => "contoso.onmicrosoft.com",
            Placeholder::Region => "eu-west-1",
        }
    }

    /// Checks a value and returns it in canonical (lower-case) form.
    pub fn check(self, value: &str) -> Result<String, PresetError> {
        let v = value.trim().to_ascii_lowercase();
        let ok = match self {
            Placeholder::Tenant => is_guid(&v) || (is_dns_name(&v) && v.contains('.')),
            Placeholder::Region => is_aws_region(&v),
        };
        if ok {
            Ok(v)
        } else {
            Err(PresetError::InvalidPlaceholder {
                key: self.key(),
                value: echo(value),
                expected: match self {
                    Placeholder::Tenant => {
                        "a tenant ID (GUID) or a domain name, e.g. contoso.onmicrosoft.com"
                    }
                    Placeholder::Region => "an AWS region, e.g. eu-west-1 or us-east-1",
                },
            })
        }
    }
}

/// Whether `v` is a GUID in its usual 8-4-4-4-12 hexadecimal form.
fn is_guid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `v` looks like an AWS region: `eu-west-1`, `ap-southeast-2`, `us-gov-west-1`.
fn is_aws_region(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let letters =
        |p: &&str| !p.is_empty() && p.len() <= 16 && p.bytes().all(|b| b.is_ascii_lowercase());
    match parts.as_slice() {
        [area, middle @ .., number] => {
            area.len() == 2
                && letters(area)
                && (1..=2).contains(&middle.len())
                && middle.iter().all(letters)
                && (1..=2).contains(&number.len())
                && number.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_lower_cased() {
        assert_eq!(
            Placeholder::Tenant.check(" 72F988BF-86F1-41AF-91AB-2D7CD011DB47 "),
            Ok("72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned())
        );
        assert_eq!(
            Placeholder::Tenant.check("Fabrikam.com"),
            Ok("fabrikam.com".to_owned())
        );
        assert_eq!(
            Placeholder::Region.check("us-east-1"),
            Ok("us-east-1".to_owned())
        );
        for bad in [
            "",
            "organizations",
            "72f988bf86f141af91ab2d7cd011db47",
            "-a.com",
        ] {
            assert!(Placeholder::Tenant.check(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "us-east-1a", "us_east_1", "us-east-", "1-east-1"] {
            assert!(Placeholder::Region.check(bad).is_err(), "{bad:?}");
        }
    }
}
