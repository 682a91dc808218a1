/*
 * The operator authority (include/keyhole/authority.h, the protocol design "Identities and
 * personalisation"): it makes the Ed25519 root key and its self-signed X.509 root, the master
 * key card keys are diversified from, and it hands out unique addresses and issues the module
 * certificates that kh_cert_check() accepts and `openssl verify -CAfile root.crt` agrees with.
 * Everything lives in one directory (layout in authority.h); secret files are written under
 * umask 077 and read only while group and others cannot access them. The UA counter is
 * replaced atomically under a lock on the directory before a UA is returned, so a UA is never
 * handed out twice, not even across a crash or by two processes at once. Keys and certificates
 * are created, never replaced (kh_file_write_new): a second certificate for one UA and use, or
 * a second authority in one directory, fails with KH_ERR_EXISTS, even when racing the first.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keyhole/authority.h"
#include "keyhole/cas.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"

#define ROOT_KEY "root.key"
#define ROOT_CRT "root.crt"
#define MASTER_KEY "master.key"
#define NEXT_UA "next-ua"
#define ISSUED "issued"

#define MASTER_LEN 32
#define ROOT_DAYS 10957 /* 30 years */
#define VALIDITY_FILE "validity-days"
#define BACKDATE_SECS 60 /* tolerate clocks a little behind ours */
#define SERIAL_LEN 16
#define FILE_MAX 65536


struct kh_authority {
	char *dir;
	char *name; /* operator name, the O of the root certificate */
	EVP_PKEY *root; /* Ed25519 private key */
	X509 *root_crt;
	uint8_t root_pk[32];
	uint8_t root_der[KH_CERT_MAX];
	size_t root_der_len;
	uint8_t master[MASTER_LEN];
	long leaf_days; /* validity of the certificates it issues (the policy file, or the default) */
};

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);

	if (p == NULL)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

/* KH_OK when nothing is at path, KH_ERR_EXISTS when something is. */
static kh_err absent(const char *dir, const char *name)
{
	struct stat st;
	char *p = join(dir, name);
	kh_err r;

	if (p == NULL)
		return KH_ERR_NOMEM;
	if (lstat(p, &st) == 0)
		r = KH_ERR_EXISTS;
	else
		r = errno == ENOENT ? KH_OK : KH_ERR_IO;
	free(p);
	return r;
}

/* Replace dir/name (or create it): for the one file replaced by design, next-ua. */
static kh_err write_in(const char *dir, const char *name, const void *data, size_t len, mode_t mode)
{
	char *p = join(dir, name);
	kh_err r;

	if (p == NULL)
		return KH_ERR_NOMEM;
	r = kh_file_write_atomic(p, data, len, mode);
	free(p);
	return r;
}

/* Create dir/name, KH_ERR_EXISTS if anything is there already: keys and certificates. */
static kh_err create_in(const char *dir, const char *name, const void *data, size_t len, mode_t mode)
{
	char *p = join(dir, name);
	kh_err r;

	if (p == NULL)
		return KH_ERR_NOMEM;
	r = kh_file_write_new(p, data, len, mode);
	free(p);
	return r;
}

static kh_err read_in(const char *dir, const char *name, int secret, size_t max, uint8_t **data,
		      size_t *len)
{
	char *p = join(dir, name);
	kh_err r;

	if (p == NULL)
		return KH_ERR_NOMEM;
	r = secret ? kh_keyfile_read(p, max, data, len) : kh_file_read(p, max, data, len);
	free(p);
	return r;
}

/* What a memory BIO holds. */
static kh_err bio_data(BIO *bio, const char **data, size_t *len)
{
	char *p = NULL;
	long n = BIO_get_mem_data(bio, &p);

	if (n <= 0 || p == NULL)
		return KH_ERR_CRYPTO;
	*data = p;
	*len = (size_t)n;
	return KH_OK;
}

/* Create dir/name with what a memory BIO holds (never replacing anything). */
static kh_err create_bio(const char *dir, const char *name, BIO *bio, mode_t mode)
{
	const char *p;
	size_t n;
	kh_err r;

	if ((r = bio_data(bio, &p, &n)) != KH_OK)
		return r;
	return create_in(dir, name, p, n, mode);
}

/* The next-ua file: decimal, 1 .. 2^32 (2^32 meaning every UA has been handed out). */
static kh_err parse_counter(const uint8_t *p, size_t n, uint64_t *v)
{
	uint64_t x = 0;
	size_t i;

	if (n > 0 && p[n - 1] == '\n')
		n--;
	if (n == 0 || n > 10)
		return KH_ERR_FORMAT;
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return KH_ERR_FORMAT;
		x = x * 10 + (uint64_t)(p[i] - '0');
	}
	if (x == 0 || x > (uint64_t)UINT32_MAX + 1)
		return KH_ERR_FORMAT;
	*v = x;
	return KH_OK;
}

static kh_err read_counter(const char *dir, uint64_t *v)
{
	uint8_t *data = NULL;
	size_t len = 0;
	kh_err r;

	if ((r = read_in(dir, NEXT_UA, 0, 64, &data, &len)) != KH_OK)
		return r;
	r = parse_counter(data, len, v);
	kh_file_free(data, len);
	return r;
}

/* A random positive serial of SERIAL_LEN bytes (RFC 5280 allows up to 20). */
static kh_err set_serial(X509 *x)
{
	uint8_t b[SERIAL_LEN];
	ASN1_INTEGER *ai = NULL;
	BIGNUM *bn = NULL;
	kh_err r;

	if ((r = kh_random(b, sizeof b)) != KH_OK)
		goto out;
	/* Top bit clear keeps it positive; the next one set keeps it SERIAL_LEN bytes long. */
	b[0] = (uint8_t)((b[0] & 0x3f) | 0x40);
	r = KH_ERR_CRYPTO;
	if ((bn = BN_bin2bn(b, sizeof b, NULL)) == NULL || (ai = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    X509_set_serialNumber(x, ai) != 1)
		goto out;
	r = KH_OK;
out:
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return r;
}

static kh_err set_validity(X509 *x, long days)
{
	time_t now = time(NULL);

	if (X509_time_adj_ex(X509_getm_notBefore(x), 0, -BACKDATE_SECS, &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, &now) == NULL)
		return KH_ERR_CRYPTO;
	return KH_OK;
}

static kh_err name_add(X509_NAME *nm, int nid, const char *value)
{
	if (X509_NAME_add_entry_by_NID(nm, nid, MBSTRING_UTF8, (const unsigned char *)value, -1, -1, 0) != 1)
		return KH_ERR_INVAL; /* too long or not UTF-8 for that attribute */
	return KH_OK;
}

static kh_err ext_add(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	kh_err r = KH_OK;

	if (e == NULL || X509_add_ext(x, e, -1) != 1)
		r = KH_ERR_CRYPTO;
	X509_EXTENSION_free(e);
	return r;
}

/* An operator name that fits the root's CN and carries no control characters. */
static int name_ok(const char *s)
{
	size_t i, n;

	if (s == NULL || (n = strlen(s)) == 0 || n > KH_AUTHORITY_NAME_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

/* Self-signed root certificate for key. */
static kh_err make_root(EVP_PKEY *key, const char *operator_name, X509 **out)
{
	char cn[KH_AUTHORITY_NAME_MAX + sizeof " root"];
	X509V3_CTX ctx;
	X509_NAME *nm = NULL;
	X509 *x = NULL;
	kh_err r;

	snprintf(cn, sizeof cn, "%s root", operator_name);
	if ((x = X509_new()) == NULL || (nm = X509_NAME_new()) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = name_add(nm, NID_organizationName, operator_name)) != KH_OK ||
	    (r = name_add(nm, NID_commonName, cn)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	if (X509_set_version(x, X509_VERSION_3) != 1 || X509_set_subject_name(x, nm) != 1 ||
	    X509_set_issuer_name(x, nm) != 1 || X509_set_pubkey(x, key) != 1)
		goto out;
	if ((r = set_serial(x)) != KH_OK || (r = set_validity(x, ROOT_DAYS)) != KH_OK)
		goto out;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if ((r = ext_add(x, &ctx, NID_basic_constraints, "critical,CA:TRUE")) != KH_OK ||
	    (r = ext_add(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign")) != KH_OK ||
	    (r = ext_add(x, &ctx, NID_subject_key_identifier, "hash")) != KH_OK)
		goto out;
	/* Ed25519 signs the message itself: no separate digest. */
	if (X509_sign(x, key, NULL) <= 0) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	*out = x;
	x = NULL;
	r = KH_OK;
out:
	X509_NAME_free(nm);
	X509_free(x);
	return r;
}

/* The files kh_authority_init writes, in the order it writes them. */
enum { INIT_MASTER, INIT_CRT, INIT_NEXT, INIT_KEY, INIT_FILES };
static const char *const init_files[INIT_FILES] = {MASTER_KEY, ROOT_CRT, NEXT_UA, ROOT_KEY};

/*
 * Create init_files[i] for kh_authority_init and record in *made when this call created it,
 * so a failure later on removes it again. That is sure on success and excluded on
 * KH_ERR_EXISTS; after another error the file may still have got its name (kh_file_write_new
 * fails with it in place when the directory fsync fails), so it counts as ours if nothing was
 * there before. The directory lock keeps other inits from making it meanwhile.
 */
static kh_err init_create(const char *dir, int i, const void *data, size_t len, mode_t mode, unsigned *made)
{
	kh_err before = absent(dir, init_files[i]), r;

	if (before == KH_ERR_EXISTS)
		return KH_ERR_EXISTS;
	r = create_in(dir, init_files[i], data, len, mode);
	if (r == KH_OK || (r != KH_ERR_EXISTS && before == KH_OK))
		*made |= 1u << i;
	return r;
}

/* Undo a failed kh_authority_init: remove what it created, and nothing else. */
static void init_undo(const char *dir, int dfd, unsigned made, const char *issued, int made_issued)
{
	char *p;
	int i;

	/* root.key first: without it the directory holds no authority, whatever else remains. */
	for (i = INIT_FILES - 1; i >= 0; i--) {
		if (!(made & (1u << i)) || (p = join(dir, init_files[i])) == NULL)
			continue;
		(void)unlink(p);
		free(p);
	}
	if (made_issued && issued != NULL)
		(void)rmdir(issued); /* only if still empty */
	/* Best effort: make the removals durable, so a crash cannot bring a half authority back. */
	(void)fsync(dfd);
}

static kh_err init_dir(const char *dir, const char *operator_name)
{
	uint8_t master[MASTER_LEN];
	char hex[2 * MASTER_LEN + 2];
	static const char first_ua[] = "1\n";
	EVP_PKEY *key = NULL;
	X509 *crt = NULL;
	BIO *kbio = NULL, *cbio = NULL;
	const char *crt_pem = NULL, *key_pem = NULL;
	size_t crt_len = 0, key_len = 0;
	char *issued = NULL;
	struct stat st;
	mode_t old_mask;
	unsigned made = 0;
	int dfd = -1, made_issued = 0;
	kh_err r;

	if (dir == NULL || *dir == '\0' || !name_ok(operator_name))
		return KH_ERR_INVAL;
	/* Everything created below is private unless its mode is set explicitly. */
	old_mask = umask(077);
	ERR_set_mark();
	if (mkdir(dir, 0700) != 0 && (errno != EEXIST || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
		r = KH_ERR_IO;
		goto out;
	}
	/*
	 * The lock kh_authority_next_ua takes: two inits in one directory run one after the other,
	 * so the second finds the first's root.key, and neither undoes the other's files.
	 */
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || flock(dfd, LOCK_EX) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	/* Never overwrite an authority's secrets: the certificates it issued depend on them. */
	if ((r = absent(dir, ROOT_KEY)) != KH_OK || (r = absent(dir, MASTER_KEY)) != KH_OK)
		goto out;
	if ((key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	if ((r = make_root(key, operator_name, &crt)) != KH_OK)
		goto out;
	if ((r = kh_random(master, sizeof master)) != KH_OK)
		goto out;
	kh_hex_encode(master, sizeof master, hex);
	hex[2 * MASTER_LEN] = '\n';
	hex[2 * MASTER_LEN + 1] = '\0';

	/* The secret-holding BIO lives in secure memory when the process set it up. */
	if ((cbio = BIO_new(BIO_s_mem())) == NULL || (kbio = BIO_new(BIO_s_secmem())) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	/* PKCS#8, unencrypted: the file mode protects it, as with OpenSSH's host keys. */
	if (PEM_write_bio_X509(cbio, crt) != 1 ||
	    PEM_write_bio_PrivateKey(kbio, key, NULL, NULL, 0, NULL, NULL) != 1) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	if ((issued = join(dir, ISSUED)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if (mkdir(issued, 0700) == 0)
		made_issued = 1;
	else if (errno != EEXIST || stat(issued, &st) != 0 || !S_ISDIR(st.st_mode)) {
		r = KH_ERR_IO;
		goto out;
	}
	/*
	 * Keys and root certificate are created, never replaced. master.key first: even a writer
	 * that ignores the lock cannot make this authority share it. root.key last: its presence
	 * is what marks a finished authority.
	 */
	if ((r = bio_data(cbio, &crt_pem, &crt_len)) != KH_OK || (r = bio_data(kbio, &key_pem, &key_len)) != KH_OK)
		goto out;
	if ((r = init_create(dir, INIT_MASTER, hex, 2 * MASTER_LEN + 1, 0600, &made)) != KH_OK ||
	    (r = init_create(dir, INIT_CRT, crt_pem, crt_len, 0644, &made)) != KH_OK)
		goto out;
	/*
	 * next-ua alone may be left from an earlier attempt (or an older Keyhole): it is then reset
	 * to 1 as it always was, and not removed on failure, since this call did not create it.
	 */
	r = init_create(dir, INIT_NEXT, first_ua, sizeof first_ua - 1, 0644, &made);
	if (r == KH_ERR_EXISTS)
		r = write_in(dir, NEXT_UA, first_ua, sizeof first_ua - 1, 0644);
	if (r != KH_OK)
		goto out;
	if ((r = init_create(dir, INIT_KEY, key_pem, key_len, 0600, &made)) != KH_OK)
		goto out;
	r = KH_OK;
out:
	if (r != KH_OK && (made != 0 || made_issued))
		init_undo(dir, dfd, made, issued, made_issued);
	if (dfd >= 0)
		close(dfd); /* releases the lock */
	kh_wipe(master, sizeof master);
	kh_wipe(hex, sizeof hex);
	BIO_free(kbio); /* a memory BIO clears its buffer when freed */
	BIO_free(cbio);
	X509_free(crt);
	EVP_PKEY_free(key);
	free(issued);
	ERR_pop_to_mark();
	umask(old_mask);
	return r;
}

kh_err kh_authority_init(const char *dir, const char *operator_name)
{
	return kh_authority_init_days(dir, operator_name, 0);
}

kh_err kh_authority_init_days(const char *dir, const char *operator_name, unsigned days)
{
	struct kh_authority *a = NULL;
	char buf[24];
	int n;
	kh_err r;

	if (days > KH_AUTHORITY_VALIDITY_MAX)
		return KH_ERR_INVAL;
	if ((r = init_dir(dir, operator_name)) != KH_OK)
		return r;
	if (days) {
		n = snprintf(buf, sizeof buf, "%u\n", days);
		if ((r = write_in(dir, VALIDITY_FILE, buf, (size_t)n, 0644)) != KH_OK)
			return r;
	}
	/* The ECM and EMM signers come with the authority (signers.c); the directory's lock is
	 * released by now, as issuing takes it again for each UA. */
	if ((r = kh_authority_open(dir, &a)) == KH_OK)
		r = kh_authority_signers_ensure(a, NULL);
	kh_authority_free(a);
	return r;
}

/* Never prompt on a terminal for a passphrase: an encrypted root.key is simply refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static kh_err load_root_key(struct kh_authority *a)
{
	uint8_t *data = NULL;
	size_t len = 0;
	BIO *bio = NULL;
	kh_err r;

	if ((r = read_in(a->dir, ROOT_KEY, 1, FILE_MAX, &data, &len)) != KH_OK)
		goto out;
	if ((bio = BIO_new_mem_buf(data, (int)len)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((a->root = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)) == NULL ||
	    EVP_PKEY_get_base_id(a->root) != EVP_PKEY_ED25519) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	r = KH_OK;
out:
	BIO_free(bio);
	kh_file_free(data, len);
	return r;
}

static kh_err load_master(struct kh_authority *a)
{
	uint8_t *data = NULL;
	size_t len = 0;
	kh_err r;

	if ((r = read_in(a->dir, MASTER_KEY, 1, 256, &data, &len)) != KH_OK)
		goto out;
	r = kh_hex_decode((const char *)data, len, a->master, sizeof a->master);
out:
	kh_file_free(data, len);
	return r;
}

/* root.crt: a valid self-signed root whose key is root.key's; its O names the operator. */
static kh_err load_root_crt(struct kh_authority *a)
{
	uint8_t pk[32];
	size_t pklen = sizeof pk, n;
	uint8_t *data = NULL;
	size_t len = 0;
	const unsigned char *p;
	const X509_NAME *subj;
	unsigned char *utf8 = NULL;
	int i, ulen;
	kh_err r;

	if ((r = read_in(a->dir, ROOT_CRT, 0, FILE_MAX, &data, &len)) != KH_OK)
		goto out;
	if ((r = kh_cert_pem_to_der((const char *)data, len, a->root_der, sizeof a->root_der, &n)) != KH_OK)
		goto out;
	a->root_der_len = n;
	if ((r = kh_cert_root_pk(a->root_der, n, a->root_pk)) != KH_OK)
		goto out;
	r = KH_ERR_CERT;
	if (EVP_PKEY_get_raw_public_key(a->root, pk, &pklen) != 1 || pklen != sizeof pk ||
	    memcmp(pk, a->root_pk, sizeof pk) != 0)
		goto out;
	p = a->root_der;
	if ((a->root_crt = d2i_X509(NULL, &p, (long)n)) == NULL)
		goto out;
	subj = X509_get_subject_name(a->root_crt);
	if ((i = X509_NAME_get_index_by_NID(subj, NID_organizationName, -1)) < 0)
		goto out;
	if ((ulen = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)))) <= 0 ||
	    memchr(utf8, 0, (size_t)ulen) != NULL)
		goto out;
	if ((a->name = strndup((const char *)utf8, (size_t)ulen)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	r = KH_OK;
out:
	OPENSSL_free(utf8);
	kh_file_free(data, len);
	return r;
}

/* The policy: DIR/validity-days holds the days a certificate issued from now on is valid. */
static kh_err load_validity(struct kh_authority *a)
{
	uint8_t *data = NULL;
	size_t len = 0;
	uint64_t v;
	kh_err r;

	a->leaf_days = KH_AUTHORITY_VALIDITY_DEFAULT;
	r = read_in(a->dir, VALIDITY_FILE, 0, 64, &data, &len);
	if (r == KH_ERR_NOTFOUND)
		return KH_OK;
	if (r != KH_OK)
		return r;
	r = parse_counter(data, len, &v);
	if (r == KH_OK && (v < 1 || v > KH_AUTHORITY_VALIDITY_MAX))
		r = KH_ERR_FORMAT;
	if (r == KH_OK)
		a->leaf_days = (long)v;
	kh_file_free(data, len);
	return r;
}

kh_err kh_authority_open(const char *dir, struct kh_authority **out)
{
	struct kh_authority *a = NULL;
	uint64_t next;
	kh_err r;

	if (dir == NULL || out == NULL)
		return KH_ERR_INVAL;
	ERR_set_mark();
	if ((a = calloc(1, sizeof *a)) == NULL || (a->dir = strdup(dir)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = load_root_key(a)) != KH_OK || (r = load_master(a)) != KH_OK ||
	    (r = load_root_crt(a)) != KH_OK)
		goto out;
	if ((r = load_validity(a)) != KH_OK)
		goto out;
	/* A broken counter is found now rather than halfway through personalising a card. */
	if ((r = read_counter(a->dir, &next)) != KH_OK)
		goto out;
	*out = a;
	a = NULL;
	r = KH_OK;
out:
	kh_authority_free(a);
	ERR_pop_to_mark();
	return r;
}

void kh_authority_free(struct kh_authority *a)
{
	if (a == NULL)
		return;
	EVP_PKEY_free(a->root); /* OpenSSL clears the private key it frees */
	X509_free(a->root_crt);
	free(a->dir);
	free(a->name);
	kh_wipe(a, sizeof *a);
	free(a);
}

void kh_authority_root_pk(const struct kh_authority *a, uint8_t pk[static 32])
{
	memcpy(pk, a->root_pk, 32);
}

void kh_authority_root_der(const struct kh_authority *a, const uint8_t **der, size_t *len)
{
	*der = a->root_der;
	*len = a->root_der_len;
}

const char *kh_authority_name(const struct kh_authority *a)
{
	return a->name;
}

const char *kh_authority_dir(const struct kh_authority *a)
{
	return a->dir;
}

/* The mark of a UA whose keys were sent to a module: issued/ua-XXXXXXXX.spent. */
static void spent_name(char *fname, size_t cap, uint32_t ua)
{
	snprintf(fname, cap, ISSUED "/ua-%08X.spent", (unsigned)ua);
}

kh_err kh_authority_ua_spend(struct kh_authority *a, uint32_t ua, enum kh_role role)
{
	char fname[64], line[64];
	int n;

	if (a == NULL || !kh_role_name(role))
		return KH_ERR_INVAL;
	spent_name(fname, sizeof fname, ua);
	n = snprintf(line, sizeof line, "%s %08X\n", kh_role_name(role), (unsigned)ua);
	if (n <= 0 || (size_t)n >= sizeof line)
		return KH_ERR_INTERNAL;
	return create_in(a->dir, fname, line, (size_t)n, 0644);
}

kh_err kh_authority_ua_free(const struct kh_authority *a, uint32_t ua)
{
	static const char *const uses[] = {"sign", "pair"};
	char fname[64];
	kh_err r;

	spent_name(fname, sizeof fname, ua);
	if ((r = absent(a->dir, fname)) != KH_OK)
		return r;
	for (int i = 1; kh_role_name((enum kh_role)i); i++)
		for (size_t u = 0; u < 2; u++) {
			snprintf(fname, sizeof fname, ISSUED "/%s-%08X-%s.crt", kh_role_name((enum kh_role)i),
				 (unsigned)ua, uses[u]);
			if ((r = absent(a->dir, fname)) != KH_OK)
				return r;
		}
	return KH_OK;
}

kh_err kh_authority_next_ua(struct kh_authority *a, uint32_t *ua)
{
	char buf[24];
	uint64_t v;
	int fd = -1, n;
	kh_err r;

	if (a == NULL || ua == NULL)
		return KH_ERR_INVAL;
	/* The lock makes read-then-replace one step for every process sharing the directory. */
	if ((fd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || flock(fd, LOCK_EX) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	if ((r = read_counter(a->dir, &v)) != KH_OK)
		goto out;
	if (v >= KH_SIGNER_SERIAL_BASE) {
		r = KH_ERR_TOO_LARGE; /* every module UA has been handed out (the rest are signers') */
		goto out;
	}
	n = snprintf(buf, sizeof buf, "%llu\n", (unsigned long long)(v + 1));
	if (n <= 0 || (size_t)n >= sizeof buf) {
		r = KH_ERR_INTERNAL;
		goto out;
	}
	/* Durable before it is returned: after a crash the UA counts as used. */
	if ((r = write_in(a->dir, NEXT_UA, buf, (size_t)n, 0644)) != KH_OK)
		goto out;
	*ua = (uint32_t)v;
	r = KH_OK;
out:
	if (fd >= 0)
		close(fd); /* releases the lock */
	return r;
}

/* The leaf certificate for pub, signed by the root. */
static kh_err make_leaf(struct kh_authority *a, const char *rname, uint32_t ua, enum kh_cert_key key,
			const uint8_t pub[static 32], X509 **out)
{
	char serial[9], cn[32];
	X509V3_CTX ctx;
	X509_NAME *nm = NULL;
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	int type = key == KH_CERT_KEY_ED25519 ? EVP_PKEY_ED25519 : EVP_PKEY_X25519;
	kh_err r;

	snprintf(serial, sizeof serial, "%08X", (unsigned)ua);
	snprintf(cn, sizeof cn, "%s %08X", rname, (unsigned)ua);
	if ((pk = EVP_PKEY_new_raw_public_key(type, NULL, pub, 32)) == NULL) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	if ((x = X509_new()) == NULL || (nm = X509_NAME_new()) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = name_add(nm, NID_organizationName, a->name)) != KH_OK ||
	    (r = name_add(nm, NID_organizationalUnitName, rname)) != KH_OK ||
	    (r = name_add(nm, NID_serialNumber, serial)) != KH_OK ||
	    (r = name_add(nm, NID_commonName, cn)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	if (X509_set_version(x, X509_VERSION_3) != 1 || X509_set_subject_name(x, nm) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(a->root_crt)) != 1 || X509_set_pubkey(x, pk) != 1)
		goto out;
	if ((r = set_serial(x)) != KH_OK || (r = set_validity(x, a->leaf_days)) != KH_OK)
		goto out;
	X509V3_set_ctx(&ctx, a->root_crt, x, NULL, NULL, 0);
	if ((r = ext_add(x, &ctx, NID_basic_constraints, "critical,CA:FALSE")) != KH_OK ||
	    (r = ext_add(x, &ctx, NID_key_usage,
			 key == KH_CERT_KEY_ED25519 ? "critical,digitalSignature" : "critical,keyAgreement")) != KH_OK ||
	    (r = ext_add(x, &ctx, NID_subject_key_identifier, "hash")) != KH_OK ||
	    (r = ext_add(x, &ctx, NID_authority_key_identifier, "keyid:always")) != KH_OK)
		goto out;
	if (X509_sign(x, a->root, NULL) <= 0) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	*out = x;
	x = NULL;
	r = KH_OK;
out:
	X509_NAME_free(nm);
	EVP_PKEY_free(pk);
	X509_free(x);
	return r;
}

kh_err kh_authority_issue(struct kh_authority *a, enum kh_role role, uint32_t ua, enum kh_cert_key key,
			  const uint8_t pub[static 32], const char *use, uint8_t *der, size_t cap, size_t *len)
{
	uint8_t buf[KH_CERT_MAX];
	struct kh_cert_info info;
	char fname[64];
	const char *rname = kh_role_name(role);
	unsigned char *p;
	X509 *x = NULL;
	BIO *bio = NULL;
	int n;
	kh_err r;

	if (a == NULL || rname == NULL || pub == NULL || use == NULL || der == NULL || len == NULL)
		return KH_ERR_INVAL;
	/* A signing certificate carries an Ed25519 key, a pairing certificate an X25519 key. */
	if (!(key == KH_CERT_KEY_ED25519 && strcmp(use, "sign") == 0) &&
	    !(key == KH_CERT_KEY_X25519 && strcmp(use, "pair") == 0))
		return KH_ERR_INVAL;
	ERR_set_mark();
	snprintf(fname, sizeof fname, ISSUED "/%s-%08X-%s.crt", rname, (unsigned)ua, use);
	/* One certificate per UA and use: a UA names one module, never a second key. */
	if ((r = absent(a->dir, fname)) != KH_OK)
		goto out;
	if ((r = make_leaf(a, rname, ua, key, pub, &x)) != KH_OK)
		goto out;
	if ((n = i2d_X509(x, NULL)) <= 0 || (size_t)n > sizeof buf) {
		r = n <= 0 ? KH_ERR_CRYPTO : KH_ERR_TOO_LARGE;
		goto out;
	}
	p = buf;
	if (i2d_X509(x, &p) != n) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	if ((size_t)n > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	/* Issue nothing the modules' own check would refuse. */
	if ((r = kh_cert_check(buf, (size_t)n, a->root_pk, role, key, 0, &info)) != KH_OK ||
	    info.ua != ua || memcmp(info.pub, pub, 32) != 0) {
		r = KH_ERR_INTERNAL;
		goto out;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if (PEM_write_bio_X509(bio, x) != 1) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	/*
	 * Created, never replaced: of two processes issuing for the same UA and use at once, one
	 * gets KH_ERR_EXISTS here even though both passed the check above.
	 */
	if ((r = create_bio(a->dir, fname, bio, 0644)) != KH_OK)
		goto out;
	memcpy(der, buf, (size_t)n);
	*len = (size_t)n;
	r = KH_OK;
out:
	BIO_free(bio);
	X509_free(x);
	ERR_pop_to_mark();
	return r;
}

kh_err kh_authority_card_keys(const struct kh_authority *a, uint32_t ua, uint8_t kp[static 32],
			      uint8_t ku[static 32])
{
	uint8_t p[32], u[32];
	kh_err r;

	if (a == NULL || kp == NULL || ku == NULL)
		return KH_ERR_INVAL;
	/* one derivation for the card and the center: base/cas.c */
	if ((r = kh_cas_card_kp(a->master, ua, p)) != KH_OK || (r = kh_cas_card_ku(a->master, ua, u)) != KH_OK)
		goto out;
	memcpy(kp, p, sizeof p);
	memcpy(ku, u, sizeof u);
	r = KH_OK;
out:
	kh_wipe(p, sizeof p);
	kh_wipe(u, sizeof u);
	return r;
}
