//! Virtual-hosted-style addressing: a request to `BUCKET.DOMAIN` names its
//! bucket in the host, for each base domain given with `--s3-domain`.
//! Any other host (an IP address, `localhost`, the base domain itself) is
//! path-style.
//!
//! Written here rather than s3s's `SingleDomain`/`MultiDomain` because
//! those take any other host that looks like a domain to be a bucket
//! (CNAME-style): a path-style request to `127.0.0.1:7410` would then
//! name a bucket `127.0.0.1:7410`.

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// The base domains of virtual-hosted-style requests.
#[derive(Debug, Clone, Default)]
pub struct VirtualHosts {
    domains: Vec<String>,
}

impl VirtualHosts {
    /// Each domain lowercase letters, digits, `-` and `.` in non-empty
    /// labels; refused with a message otherwise.
    pub fn new(domains: &[String]) -> Result<Self, String> {
        let mut checked = Vec::new();
        for domain in domains {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            let valid = !domain.is_empty()
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(format!(
                    "--s3-domain {domain:?} is not a domain name (such as s3.example.com)"
                ));
            }
            checked.push(domain);
        }
        Ok(Self { domains: checked })
    }

    /// The bucket a `Host` header names, if it is `BUCKET.DOMAIN`.
    fn bucket_of<'a>(&self, host: &'a str) -> Option<(&'a str, &'a str)> {
        // A port (or an IPv6 literal's brackets) never ends in a domain.
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        self.domains.iter().find_map(|domain| {
            let bucket = name
                .len()
                .checked_sub(domain.len() + 1)
                .filter(|&end| {
                    name.is_char_boundary(end)
                        && name[end..].starts_with('.')
                        && name[end + 1..].eq_ignore_ascii_case(domain)
                })
                .map(|end| &name[..end])?;
            (!bucket.is_empty()).then_some((bucket, &name[bucket.len() + 1..]))
        })
    }
}

impl S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some((bucket, domain)) => VirtualHost::new(domain).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_come_from_subdomains_of_the_base_domains_only() {
        let hosts = VirtualHosts::new(&["s3.example.com".into(), "Storage.Local.".into()]).unwrap();
        assert_eq!(
            hosts.bucket_of("photos.s3.example.com"),
            Some(("photos", "s3.example.com"))
        );
        assert_eq!(
            hosts.bucket_of("my.dotted.bucket.s3.example.com:7410"),
            Some(("my.dotted.bucket", "s3.example.com"))
        );
        assert_eq!(
            hosts.bucket_of("logs.STORAGE.local"),
            Some(("logs", "STORAGE.local"))
        );
        for path_style in [
            "s3.example.com",
            "s3.example.com:7410",
            "127.0.0.1:7410",
            "localhost",
            "[::1]:7410",
            "evils3.example.com",
            ".s3.example.com",
            "example.com",
        ] {
            assert_eq!(hosts.bucket_of(path_style), None, "{path_style}");
        }
        assert_eq!(VirtualHosts::default().bucket_of("a.b.c"), None);
    }

    #[test]
    fn a_base_domain_must_be_a_domain_name() {
        for bad in [
            "",
            "s3..example.com",
            "s3.example.com:80",
            "exa mple.com",
            "é.com",
        ] {
            assert!(VirtualHosts::new(&[bad.into()]).is_err(), "{bad:?}");
        }
    }
}
