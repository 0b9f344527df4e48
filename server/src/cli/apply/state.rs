//! What the server holds now: every connector, credential and account, read page by page.

use crate::cli::{CliError, Conn};
use mailplane_proto::v1 as pb;
use pb::credential_service_client::CredentialServiceClient;
use pb::network_connector_service_client::NetworkConnectorServiceClient;
use pb::smtp_account_service_client::SmtpAccountServiceClient;

/// The objects `apply` manages, as the server returned them (with their etags).
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The connectors, by id.
    pub connectors: Vec<pb::Connector>,
    /// The credentials, by id, without secrets.
    pub credentials: Vec<pb::Credential>,
    /// The accounts, by id.
    pub accounts: Vec<pb::SmtpAccount>,
}

/// The largest page the API gives.
const PAGE: i32 = 500;

impl Current {
    /// Reads everything.
    pub async fn read(conn: &Conn) -> Result<Self, CliError> {
        // Every page of a List call: `$call` takes the page token.
        macro_rules! all_pages {
            ($client:expr, $method:ident, $items:ident, |$token:ident| $request:expr) => {{
                let mut client = $client;
                let mut items = Vec::new();
                let mut $token = String::new();
                loop {
                    let page = client.$method($request).await?.into_inner();
                    items.extend(page.$items);
                    $token = page.next_page_token;
                    if $token.is_empty() {
                        break items;
                    }
                }
            }};
        }
        let connectors = all_pages!(
            NetworkConnectorServiceClient::new(conn.clone()),
            list_connectors,
            connectors,
            |token| pb::ListConnectorsRequest {
                page_size: PAGE,
                page_token: token.clone(),
            }
        );
        let credentials = all_pages!(
            CredentialServiceClient::new(conn.clone()),
            list_credentials,
            credentials,
            |token| pb::ListCredentialsRequest {
                page_size: PAGE,
                page_token: token.clone(),
            }
        );
        let accounts = all_pages!(
            SmtpAccountServiceClient::new(conn.clone()),
            list_accounts,
            accounts,
            |token| pb::ListAccountsRequest {
                page_size: PAGE,
                page_token: token.clone(),
                filter: None,
            }
        );
        Ok(Self {
            connectors,
            credentials,
            accounts,
        })
    }

    /// The display name of the connector `connectors/{id}`, or the name itself if unknown.
    pub fn connector_name(&self, name: &str) -> String {
        self.connectors
            .iter()
            .find(|c| c.name == name)
            .map_or_else(|| name.to_owned(), |c| c.display_name.clone())
    }

    /// The display name of the credential `credentials/{id}`, or the name itself if unknown.
    pub fn credential_name(&self, name: &str) -> String {
        self.credentials
            .iter()
            .find(|c| c.name == name)
            .map_or_else(|| name.to_owned(), |c| c.display_name.clone())
    }
}

/// Whether two unique names are the same (compared case-insensitively, as the server does for
/// account names).
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}
