/*
 * A small NLM v1/v3 client over the stubs rpcgen generates from the system's nlm_prot.x
 * (XNFS NLM: procedures NULL, TEST, LOCK, CANCEL, UNLOCK; v3 "NLM_VERSX": SHARE, UNSHARE,
 * NM_LOCK, FREE_ALL).  Used by tests/interop/test_nlm_rpcgen.py against floatlock's lockd.
 *
 * usage: nlm_client HOST PORT udp|tcp FH_HEX CALLER_NAME SCRIPT
 *   SCRIPT "full": the whole scenario below; "grace": TEST and LOCK only.
 * Prints one line per call: NAME STAT [holder: SVID OFFSET LEN EXCL]; "NAME FAIL" when the RPC
 * itself failed.  Written for this project (no code taken from other implementations).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <rpc/rpc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nlm_prot.h"

static char fh[64];
static u_int fh_len;
static char *caller;
static char cookie[] = "rpcgen-cookie";

static void set_lock(struct nlm_lock *lk, int svid, u_int off, u_int len, char *oh)
{
	lk->caller_name = caller;
	lk->fh.n_len = fh_len;
	lk->fh.n_bytes = fh;
	lk->oh.n_len = strlen(oh);
	lk->oh.n_bytes = oh;
	lk->svid = svid;
	lk->l_offset = off;
	lk->l_len = len;
}

static void set_cookie(netobj *c)
{
	c->n_len = sizeof(cookie) - 1;
	c->n_bytes = cookie;
}

static void print_res(const char *name, nlm_res *r)
{
	if (r == NULL) {
		printf("%s FAIL\n", name);
		return;
	}
	printf("%s %d\n", name, (int)r->stat.stat);
}

static void do_test(CLIENT *c, const char *name, int svid, u_int off, u_int len, char *oh)
{
	struct nlm_testargs a;
	memset(&a, 0, sizeof(a));
	set_cookie(&a.cookie);
	a.exclusive = TRUE;
	set_lock(&a.alock, svid, off, len, oh);
	nlm_testres *r = nlm_test_1(&a, c);
	if (r == NULL) {
		printf("%s FAIL\n", name);
		return;
	}
	if (r->stat.stat == nlm_denied) {
		struct nlm_holder *h = &r->stat.nlm_testrply_u.holder;
		printf("%s %d %d %u %u %d\n", name, (int)r->stat.stat, h->svid, h->l_offset,
		       h->l_len, (int)h->exclusive);
	} else {
		printf("%s %d\n", name, (int)r->stat.stat);
	}
}

static void do_lock(CLIENT *c, const char *name, int svid, u_int off, u_int len, int block,
		    char *oh, int nm)
{
	struct nlm_lockargs a;
	memset(&a, 0, sizeof(a));
	set_cookie(&a.cookie);
	a.block = block;
	a.exclusive = TRUE;
	set_lock(&a.alock, svid, off, len, oh);
	a.state = 1;
	print_res(name, nm ? nlm_nm_lock_3(&a, c) : nlm_lock_1(&a, c));
}

static void do_cancel(CLIENT *c, const char *name, int svid, u_int off, u_int len, char *oh)
{
	struct nlm_cancargs a;
	memset(&a, 0, sizeof(a));
	set_cookie(&a.cookie);
	a.block = TRUE;
	a.exclusive = TRUE;
	set_lock(&a.alock, svid, off, len, oh);
	print_res(name, nlm_cancel_1(&a, c));
}

static void do_unlock(CLIENT *c, const char *name, int svid, u_int off, u_int len, char *oh)
{
	struct nlm_unlockargs a;
	memset(&a, 0, sizeof(a));
	set_cookie(&a.cookie);
	set_lock(&a.alock, svid, off, len, oh);
	print_res(name, nlm_unlock_1(&a, c));
}

static void do_share(CLIENT *c, const char *name, int unshare, char *oh, fsh_access acc,
		     fsh_mode mode)
{
	struct nlm_shareargs a;
	memset(&a, 0, sizeof(a));
	set_cookie(&a.cookie);
	a.share.caller_name = caller;
	a.share.fh.n_len = fh_len;
	a.share.fh.n_bytes = fh;
	a.share.oh.n_len = strlen(oh);
	a.share.oh.n_bytes = oh;
	a.share.access = acc;
	a.share.mode = mode;
	nlm_shareres *r = unshare ? nlm_unshare_3(&a, c) : nlm_share_3(&a, c);
	if (r == NULL)
		printf("%s FAIL\n", name);
	else
		printf("%s %d\n", name, (int)r->stat);
}

static int null_call(CLIENT *c)
{
	struct timeval tmo = {5, 0};
	return clnt_call(c, 0, (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_void, NULL, tmo) ==
	       RPC_SUCCESS;
}

static CLIENT *connect_to(const char *host, int port, const char *proto, u_long vers)
{
	struct sockaddr_in sin;
	struct timeval wait = {1, 0};
	int sock = RPC_ANYSOCK;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return NULL;
	if (strcmp(proto, "tcp") == 0)
		return clnttcp_create(&sin, NLM_PROG, vers, &sock, 0, 0);
	return clntudp_create(&sin, NLM_PROG, vers, wait, &sock);
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s HOST PORT udp|tcp FH_HEX CALLER SCRIPT\n", argv[0]);
		return 2;
	}
	const char *host = argv[1], *proto = argv[3], *hex = argv[4], *script = argv[6];
	int port = atoi(argv[2]);
	caller = argv[5];
	fh_len = strlen(hex) / 2;
	if (fh_len > sizeof(fh))
		return 2;
	for (u_int i = 0; i < fh_len; i++)
		sscanf(hex + 2 * i, "%2hhx", (unsigned char *)&fh[i]);

	CLIENT *v1 = connect_to(host, port, proto, NLM_VERS);
	CLIENT *v3 = connect_to(host, port, proto, NLM_VERSX);
	if (v1 == NULL || v3 == NULL) {
		clnt_pcreateerror("connect");
		return 1;
	}
	struct timeval tmo = {5, 0};
	clnt_control(v1, CLSET_TIMEOUT, (char *)&tmo);
	clnt_control(v3, CLSET_TIMEOUT, (char *)&tmo);

	char oh1[] = "owner-1", oh2[] = "owner-2", oh3[] = "owner-3";
	if (strcmp(script, "grace") == 0) {
		do_test(v1, "TEST", 1, 0, 10, oh1);
		do_lock(v1, "LOCK", 1, 0, 10, 0, oh1, 0);
		return 0;
	}
	/* nlm_prot.x declares no procedure 0; every RPC program has it (RFC 5531). */
	printf("NULL %s\n", null_call(v1) ? "ok" : "FAIL");
	printf("NULL3 %s\n", null_call(v3) ? "ok" : "FAIL");
	do_test(v1, "TEST_FREE", 1, 0, 10, oh1);
	do_lock(v1, "LOCK1", 1, 0, 10, 0, oh1, 0);
	do_test(v1, "TEST_HELD", 2, 5, 1, oh2);
	do_lock(v1, "LOCK2", 2, 5, 10, 0, oh2, 0);
	do_lock(v1, "LOCK2_BLOCK", 2, 5, 10, 1, oh2, 0);
	do_cancel(v1, "CANCEL2", 2, 5, 10, oh2);
	do_unlock(v1, "UNLOCK1", 1, 0, 10, oh1);
	do_lock(v1, "LOCK2_AGAIN", 2, 5, 10, 0, oh2, 0);
	do_unlock(v1, "UNLOCK2", 2, 5, 10, oh2);
	do_share(v3, "SHARE1", 0, oh1, fsa_R, fsm_DW);
	do_share(v3, "SHARE2", 0, oh2, fsa_W, fsm_DN);
	do_share(v3, "UNSHARE1", 1, oh1, fsa_R, fsm_DW);
	do_share(v3, "SHARE2_AGAIN", 0, oh2, fsa_W, fsm_DN);
	do_share(v3, "UNSHARE2", 1, oh2, fsa_W, fsm_DN);
	do_lock(v3, "NM_LOCK3", 3, 100, 10, 0, oh3, 1);
	do_test(v1, "TEST_NM", 1, 100, 1, oh1);
	struct nlm_notify n;
	n.name = caller;
	n.state = 7;
	printf("FREE_ALL %s\n", nlm_free_all_3(&n, v3) != NULL ? "ok" : "FAIL");
	do_test(v1, "TEST_AFTER_FREE_ALL", 1, 100, 1, oh1);
	clnt_destroy(v1);
	clnt_destroy(v3);
	return 0;
}
