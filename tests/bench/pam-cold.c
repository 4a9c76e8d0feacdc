/* pam-cold: one login in a fresh process, as sshd's per-connection child makes it: a C
 * program that links libpam and nothing else of note, so the module's own load (its
 * unwinder, libgcc_s, included) is counted, which a Rust driver would already have loaded.
 *
 *   pam-cold CONFDIR SERVICE USER ANSWER_FILE
 *
 * Every prompt is answered with the first line of ANSWER_FILE. Exit status 0 when
 * pam_authenticate returns PAM_SUCCESS, 1 when it refuses, 2 on usage or set-up errors.
 * Built by the cold_process benchmark (tests/src/bench.rs) with the system's cc. */
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char answer[70000];

static int conversation(int n, const struct pam_message **msg, struct pam_response **resp,
                        void *data) {
    (void)data;
    struct pam_response *r = calloc((size_t)n, sizeof *r);
    if (r == NULL)
        return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        int style = msg[i]->msg_style;
        if (style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON) {
            r[i].resp = strdup(answer);
            if (r[i].resp == NULL) {
                for (int j = 0; j < i; j++)
                    free(r[j].resp);
                free(r);
                return PAM_BUF_ERR;
            }
        }
    }
    *resp = r;
    return PAM_SUCCESS;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: pam-cold CONFDIR SERVICE USER ANSWER_FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[4], "r");
    if (f == NULL || fgets(answer, sizeof answer, f) == NULL) {
        perror(argv[4]);
        return 2;
    }
    fclose(f);
    answer[strcspn(answer, "\n")] = '\0';
    struct pam_conv conv = {conversation, NULL};
    pam_handle_t *pamh = NULL;
    if (pam_start_confdir(argv[2], argv[3], &conv, argv[1], &pamh) != PAM_SUCCESS)
        return 2;
    int rc = pam_authenticate(pamh, 0);
    pam_end(pamh, rc);
    return rc == PAM_SUCCESS ? 0 : 1;
}
