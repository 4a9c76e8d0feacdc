/* pam_info_first.so: a test module that stands before pam_idtoken in an auth stack and sends
 * the client one PAM_TEXT_INFO message, as a banner or a lastlog/faillock notice would, then
 * steps aside (PAM_IGNORE). Up to OpenSSH 10.2, sshd's keyboard-interactive glues such a
 * message onto the next prompt's text (auth-pam.c, sshpam_query), so the client's askpass
 * sees "(USER@HOST) MESSAGE\nID token: ". Built by the test that uses it (cc -shared -fPIC
 * ... -lpam); never installed. */
#include <stddef.h>
#include <security/pam_modules.h>
#include <security/pam_ext.h>

#define MESSAGE "Authorized use only (user@elsewhere) ID token: is not this line."

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    (void)argc;
    (void)argv;
    pam_info(pamh, "%s", MESSAGE);
    return PAM_IGNORE;
}

int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_IGNORE;
}
