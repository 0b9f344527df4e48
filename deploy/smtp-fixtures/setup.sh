#!/usr/bin/env bash
# SMTP fixtures for mailplane's integration tests (agent/tests/postfix.rs).
#
# Starts a private Postfix instance listening ONLY on 127.0.0.1, with Dovecot as the
# SASL server and a Maildir for delivered mail, and a test CA plus certificates made
# at run time. Everything lives under one directory ($1, default /tmp/mailplane-smtp);
# $DIR/env lists the ports, the CA, and the test user (shell KEY=value lines).
#
#   port 2525  plain SMTP, STARTTLS offered, AUTH only after STARTTLS
#   port 2587  STARTTLS required, AUTH required to send
#   port 2465  implicit TLS (wrapper mode), AUTH required to send
#   port 2526  STARTTLS with an EXPIRED certificate (from the test CA)
#   port 2527  STARTTLS with a certificate from an UNKNOWN CA
#
# AUTH PLAIN/LOGIN take the test user's password; AUTH XOAUTH2/OAUTHBEARER take an HS256 JWT
# signed with SMTP_OAUTH2_KEY (see the OAuth2 section below).
#
# swaks (with TLS support) is installed for poking at the ports by hand.
# tinyproxy is installed (its service stopped and disabled) for the agent-behind-a-proxy test.
#
# Mail to any address @mailplane.test lands in $DIR/maildir/new.
#
# Usage (as root, Debian bookworm): deploy/smtp-fixtures/setup.sh [DIR]
#         deploy/smtp-fixtures/setup.sh --stop [DIR]
# Safe to re-run: it stops the instance it started before, regenerates the
# configuration and certificates, and starts again. The system's own Postfix and
# Dovecot (if any) are left alone.
set -euo pipefail

STOP_ONLY=0
if [[ "${1:-}" == "--stop" ]]; then
    STOP_ONLY=1
    shift
fi
DIR="${1:-/tmp/mailplane-smtp}"
case "$DIR" in
/*) ;;
*) DIR="$(pwd)/$DIR" ;;
esac

PORT_PLAIN="${MAILPLANE_PORT_PLAIN:-2525}"
PORT_SUBMISSION="${MAILPLANE_PORT_SUBMISSION:-2587}"
PORT_IMPLICIT="${MAILPLANE_PORT_IMPLICIT:-2465}"
PORT_EXPIRED="${MAILPLANE_PORT_EXPIRED:-2526}"
PORT_UNKNOWN_CA="${MAILPLANE_PORT_UNKNOWN_CA:-2527}"
DOMAIN=mailplane.test
TEST_USER=mailplane
VMAIL_USER=nobody
VMAIL_GROUP=nogroup

log() { printf 'smtp-fixtures: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ "$(id -u)" == 0 ]] || die "run as root (it installs packages and starts Postfix)"

stop_instance() {
    if [[ -f "$DIR/postfix/main.cf" ]] && command -v postfix >/dev/null; then
        if postfix -c "$DIR/postfix" status >/dev/null 2>&1; then
            log "stopping the Postfix instance in $DIR/postfix"
            postfix -c "$DIR/postfix" stop >/dev/null 2>&1 || true
            for _ in $(seq 1 100); do
                postfix -c "$DIR/postfix" status >/dev/null 2>&1 || break
                sleep 0.1
            done
        fi
    fi
    local pidfile="$DIR/dovecot/run/master.pid"
    if [[ -f "$pidfile" ]]; then
        local pid
        pid="$(cat "$pidfile")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            log "stopping the Dovecot instance (pid $pid)"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
        rm -f "$pidfile"
    fi
}

if [[ "$STOP_ONLY" == 1 ]]; then
    stop_instance
    exit 0
fi

# --- packages -------------------------------------------------------------------
need_install=0
for pkg in postfix dovecot-core swaks libnet-ssleay-perl openssl tinyproxy; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_install=1
done
if [[ "$need_install" == 1 ]]; then
    log "installing postfix, dovecot-core, swaks, openssl, tinyproxy"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends postfix dovecot-core swaks libnet-ssleay-perl openssl ca-certificates tinyproxy
fi
# tinyproxy is for the agent-behind-a-proxy test (tests/e2e/netns/proxy.rs), which runs its own
# instance in a network namespace: the Debian service must not run (nor hold port 8888).
if command -v tinyproxy >/dev/null; then
    if [[ -f /run/tinyproxy/tinyproxy.pid ]] && kill -0 "$(cat /run/tinyproxy/tinyproxy.pid)" 2>/dev/null; then
        log "stopping the tinyproxy service"
        kill "$(cat /run/tinyproxy/tinyproxy.pid)" 2>/dev/null || true
    fi
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now tinyproxy >/dev/null 2>&1 || true
    else
        update-rc.d tinyproxy disable >/dev/null 2>&1 || true
    fi
fi

stop_instance

# --- directories ----------------------------------------------------------------
mkdir -p "$DIR"
chmod 0755 "$DIR"
rm -rf "$DIR/postfix" "$DIR/dovecot" "$DIR/tls"
mkdir -p "$DIR/postfix" "$DIR/spool" "$DIR/data" "$DIR/dovecot/run" "$DIR/dovecot/state" "$DIR/tls"
chown postfix:postfix "$DIR/data"
mkdir -p "$DIR/maildir"/{new,cur,tmp}
chown -R "$VMAIL_USER:$VMAIL_GROUP" "$DIR/maildir"
chmod 0755 "$DIR/maildir" "$DIR/maildir"/{new,cur,tmp}

# --- certificates -----------------------------------------------------------------
TLS="$DIR/tls"
make_ca() { # name, common name
    local name="$1" cn="$2"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TLS/$name.key" -out "$TLS/$name.crt" -days 3650 -subj "/O=mailplane test/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    mkdir -p "$TLS/$name-db/newcerts"
    : >"$TLS/$name-db/index.txt"
    openssl rand -hex 8 >"$TLS/$name-db/serial"
    cat >"$TLS/$name-db/ca.cnf" <<EOF
[ ca ]
default_ca = this_ca
[ this_ca ]
dir = $TLS/$name-db
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
certificate = $TLS/$name.crt
private_key = $TLS/$name.key
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
[ policy_any ]
commonName = supplied
organizationName = optional
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = \$ENV::LEAF_SAN
EOF
}
make_leaf() { # ca name, leaf name, SANs, startdate, enddate
    local ca="$1" name="$2" san="$3" start="$4" end="$5"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TLS/$name.key" -out "$TLS/$name.csr" -subj "/O=mailplane test/CN=${san#DNS:}" 2>/dev/null
    LEAF_SAN="$san" openssl ca -batch -notext -config "$TLS/$ca-db/ca.cnf" -extensions leaf \
        -startdate "$start" -enddate "$end" -in "$TLS/$name.csr" -out "$TLS/$name.crt" 2>/dev/null
    rm -f "$TLS/$name.csr"
    chmod 0644 "$TLS/$name.crt"
    chmod 0640 "$TLS/$name.key"
    chgrp postfix "$TLS/$name.key"
}
now_start="$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)"
valid_end="$(date -u -d '+365 days' +%Y%m%d%H%M%SZ)"
make_ca ca "mailplane test CA"
make_ca unknown-ca "mailplane UNKNOWN test CA"
make_leaf ca server "DNS:localhost,IP:127.0.0.1" "$now_start" "$valid_end"
make_leaf ca expired "DNS:localhost,IP:127.0.0.1" 20200101000000Z 20210101000000Z
make_leaf unknown-ca unknown "DNS:localhost,IP:127.0.0.1" "$now_start" "$valid_end"
chmod 0644 "$TLS/ca.crt" "$TLS/unknown-ca.crt"

# --- Dovecot (SASL only) --------------------------------------------------------------
if [[ -f "$DIR/env" ]] && grep -q '^SMTP_PASSWORD=' "$DIR/env"; then
    PASSWORD="$(sed -n 's/^SMTP_PASSWORD=//p' "$DIR/env" | head -n1)"
else
    PASSWORD="pw-$(openssl rand -hex 12)"
fi
HASH="$(openssl passwd -6 "$PASSWORD")"

# --- OAuth2 (XOAUTH2 with JWTs checked locally by Dovecot) ----------------------------
# The tests' token endpoint signs HS256 JWTs with this key (SMTP_OAUTH2_KEY, base64); Dovecot
# accepts AUTH XOAUTH2 only for a token signed with it, unexpired, from the expected issuer,
# naming the user in `email`, and granting one of the two scopes below (its `scope` claim).
if [[ -f "$DIR/env" ]] && grep -q '^SMTP_OAUTH2_KEY=' "$DIR/env"; then
    OAUTH2_KEY="$(sed -n 's/^SMTP_OAUTH2_KEY=//p' "$DIR/env" | head -n1)"
else
    OAUTH2_KEY="$(openssl rand -base64 32)"
fi
OAUTH2_ISSUER=https://idp.mailplane.test
OAUTH2_SCOPE_MICROSOFT=https://outlook.office365.com/.default
OAUTH2_SCOPE_GOOGLE=https://mail.google.com/
mkdir -p "$DIR/dovecot/oauth2-keys/default/HS256"
printf '%s' "$OAUTH2_KEY" >"$DIR/dovecot/oauth2-keys/default/HS256/default"
chown -R root:dovecot "$DIR/dovecot/oauth2-keys"
chmod -R u=rwX,g=rX,o= "$DIR/dovecot/oauth2-keys"
for provider in microsoft google; do
    scope_var="OAUTH2_SCOPE_${provider^^}"
    cat >"$DIR/dovecot/oauth2-$provider.conf.ext" <<EOF
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$DIR/dovecot/oauth2-keys/
username_attribute = email
issuers = $OAUTH2_ISSUER
scope = ${!scope_var}
EOF
    chmod 0644 "$DIR/dovecot/oauth2-$provider.conf.ext"
done
printf '%s:{SHA512-CRYPT}%s\n' "$TEST_USER" "$HASH" >"$DIR/dovecot/passwd"
chown root:dovecot "$DIR/dovecot/passwd"
chmod 0640 "$DIR/dovecot/passwd"
cat >"$DIR/dovecot/dovecot.conf" <<EOF
# mailplane SMTP fixtures: Dovecot as SASL server for Postfix only.
base_dir = $DIR/dovecot/run
state_dir = $DIR/dovecot/state
instance_name = mailplane-fixtures
protocols =
ssl = no
log_path = $DIR/dovecot/dovecot.log
auth_mechanisms = plain login xoauth2 oauthbearer
disable_plaintext_auth = no
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = $DIR/dovecot/passwd
}
# XOAUTH2 and OAUTHBEARER: JWTs validated locally against the key below, as an OAuth2
# provider's tokens would be (see the OAuth2 section of this script).
# Dovecot wants every scope it is configured with, so one passdb per provider scope: a token
# passes if it grants either.
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DIR/dovecot/oauth2-microsoft.conf.ext
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DIR/dovecot/oauth2-google.conf.ext
}
userdb {
  driver = static
  args = uid=$VMAIL_USER gid=$VMAIL_GROUP home=$DIR/maildir
}
service auth {
  unix_listener $DIR/dovecot/auth-client {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service anvil {
  chroot =
}
EOF
dovecot -c "$DIR/dovecot/dovecot.conf" </dev/null >/dev/null 2>&1 || die "Dovecot did not start; see $DIR/dovecot/dovecot.log"

# --- Postfix --------------------------------------------------------------------
PF="$DIR/postfix"
VUID="$(id -u "$VMAIL_USER")"
VGID="$(getent group "$VMAIL_GROUP" | cut -d: -f3)"
cat >"$PF/main.cf" <<EOF
# mailplane SMTP fixtures (generated by deploy/smtp-fixtures/setup.sh)
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $DIR/postfix.log
maillog_file_prefixes = $DIR
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.$DOMAIN
mydomain = $DOMAIN
myorigin = \$mydomain
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
local_transport = error:local delivery is disabled
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_base = $DIR
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:$VUID
virtual_gid_maps = static:$VGID
virtual_minimum_uid = 1
smtputf8_enable = no
biff = no
append_dot_mydomain = no
smtpd_banner = \$myhostname ESMTP mailplane-fixtures
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_tls_cert_file = $TLS/server.crt
smtpd_tls_key_file = $TLS/server.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_loglevel = 1
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DIR/dovecot/auth-client
smtpd_sasl_auth_enable = yes
broken_sasl_auth_clients = no
EOF
cp /usr/share/postfix/master.cf.dist "$PF/master.cf"
postconf -c "$PF" -X -M smtp/inet
postconf -c "$PF" -F '*/*/chroot = n'
add_service() { # port, extra -o options...
    local port="$1"
    shift
    postconf -c "$PF" -M "127.0.0.1:$port/inet=127.0.0.1:$port inet n - n - - smtpd $*"
}
add_service "$PORT_PLAIN" -o syslog_name=postfix/plain
add_service "$PORT_SUBMISSION" -o syslog_name=postfix/submission -o smtpd_tls_security_level=encrypt \
    -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject \
    -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
add_service "$PORT_IMPLICIT" -o syslog_name=postfix/smtps -o smtpd_tls_wrappermode=yes \
    -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject \
    -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
add_service "$PORT_EXPIRED" -o syslog_name=postfix/expired -o smtpd_tls_cert_file="$TLS/expired.crt" \
    -o smtpd_tls_key_file="$TLS/expired.key"
add_service "$PORT_UNKNOWN_CA" -o syslog_name=postfix/unknownca -o smtpd_tls_cert_file="$TLS/unknown.crt" \
    -o smtpd_tls_key_file="$TLS/unknown.key"

postfix -c "$PF" check || die "postfix check failed; see $DIR/postfix.log (or run: script -qc 'postfix -c $PF check' /dev/null)"
postfix -c "$PF" start </dev/null >/dev/null 2>&1 || die "Postfix did not start; see $DIR/postfix.log"

# --- wait until every port answers ------------------------------------------------------
for port in "$PORT_PLAIN" "$PORT_SUBMISSION" "$PORT_IMPLICIT" "$PORT_EXPIRED" "$PORT_UNKNOWN_CA"; do
    ok=0
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [[ "$ok" == 1 ]] || die "port $port does not answer; see $DIR/postfix.log"
done
[[ -S "$DIR/dovecot/auth-client" ]] || die "Dovecot's auth socket is missing; see $DIR/dovecot/dovecot.log"

cat >"$DIR/env" <<EOF
SMTP_FIXTURES_DIR=$DIR
SMTP_HOST=localhost
SMTP_PORT_PLAIN=$PORT_PLAIN
SMTP_PORT_SUBMISSION=$PORT_SUBMISSION
SMTP_PORT_IMPLICIT=$PORT_IMPLICIT
SMTP_PORT_EXPIRED=$PORT_EXPIRED
SMTP_PORT_UNKNOWN_CA=$PORT_UNKNOWN_CA
SMTP_CA=$TLS/ca.crt
SMTP_USER=$TEST_USER
SMTP_PASSWORD=$PASSWORD
SMTP_DOMAIN=$DOMAIN
SMTP_MAILDIR=$DIR/maildir
SMTP_OAUTH2_KEY=$OAUTH2_KEY
SMTP_OAUTH2_ISSUER=$OAUTH2_ISSUER
SMTP_OAUTH2_SCOPE_MICROSOFT=$OAUTH2_SCOPE_MICROSOFT
SMTP_OAUTH2_SCOPE_GOOGLE=$OAUTH2_SCOPE_GOOGLE
EOF
chmod 0644 "$DIR/env"
log "ready: $DIR/env"
cat "$DIR/env" >&2
