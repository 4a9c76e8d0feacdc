#!/bin/sh
# SSH_ASKPASS helper for CI images without `idtoken`, as strict as `idtoken askpass`: it answers
# only "(USER@HOST) ID token: " (part 1) and "(USER@HOST) ID token (part N): " with part N of
# $IDTOKEN (1000 characters each), and only when HOST is $IDTOKEN_HOST (case ignored: ssh
# lowercases it) and, if $IDTOKEN_USER is set, USER is $IDTOKEN_USER. Lines of PAM messages
# that sshd (OpenSSH <= 10.2) glues between "(USER@HOST) " and the prompt are passed over.
# Any other prompt, or no $IDTOKEN/$IDTOKEN_HOST: exit 1, nothing printed.
[ -n "$IDTOKEN" ] && [ -n "$IDTOKEN_HOST" ] || { echo "idtoken-askpass: \$IDTOKEN or \$IDTOKEN_HOST is not set" >&2; exit 1; }
case $1 in "("*") "*) ;; *) exit 1 ;; esac
nl=$(printf '\nx'); nl=${nl%x}
r=${1#"("}; who=${r%%") "*}; p=${r#*") "}; p=${p##*"$nl"}; p=${p%"${p##*[! ]}"}
case $who in *[[:space:]]*) exit 1 ;; ?*@?*) ;; *) exit 1 ;; esac
lc() { printf '%s' "$1" | tr 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' 'abcdefghijklmnopqrstuvwxyz'; }
[ "$(lc "${who##*@}")" = "$(lc "$IDTOKEN_HOST")" ] || { echo "idtoken-askpass: not answering ${who##*@}: the token is only for \$IDTOKEN_HOST" >&2; exit 1; }
[ -z "${IDTOKEN_USER+set}" ] || [ "${who%@*}" = "$IDTOKEN_USER" ] || exit 1
case $p in "ID token:") n=1 ;; "ID token (part "[1-9]*"):") n=${p#"ID token (part "}; n=${n%"):"} ;; *) exit 1 ;; esac
case $n in *[!0-9]* | ??????*) exit 1 ;; esac
printf '%s' "$IDTOKEN" | tr -d ' \t\r\n' | cut -c "$(( (n - 1) * 1000 + 1 ))-$(( n * 1000 ))"
