/*
 * Tests of the operator authority (src/center/authority), the certificate check every zone
 * uses (src/base/cert.c) and the file helpers they rest on (src/base/file.c). Certificates are
 * also handed to the openssl command, so "checkable with openssl verify" is
 * tested against an implementation that is not ours.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/authority.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "testutil.h"

/* ---- helpers ---- */

static char *path_in(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	assert_non_null(p);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static mode_t file_mode(const char *dir, const char *name)
{
	struct stat st;
	char *p = path_in(dir, name);
	assert_int_equal(stat(p, &st), 0);
	free(p);
	return st.st_mode & 07777;
}

static void chmod_in(const char *dir, const char *name, mode_t m)
{
	char *p = path_in(dir, name);
	assert_int_equal(chmod(p, m), 0);
	free(p);
}

static void put_text(const char *dir, const char *name, const char *text)
{
	char *p = path_in(dir, name);
	assert_int_equal(kh_file_write_atomic(p, (const uint8_t *)text, strlen(text), 0644), KH_OK);
	free(p);
}

/* Entries of a directory other than . and .. */
static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* Entries of a directory whose name holds ".tmp.": temporary files left behind. */
static int count_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strstr(e->d_name, ".tmp.") != NULL)
			n++;
	closedir(d);
	return n;
}

/* 1 when something (even a dangling symbolic link) is at dir/name. */
static int exists_in(const char *dir, const char *name)
{
	struct stat st;
	char *p = path_in(dir, name);
	int r = lstat(p, &st) == 0;
	assert_true(r || errno == ENOENT);
	free(p);
	return r;
}

/* Assert that dir/name holds exactly len bytes equal to want. */
static void assert_content(const char *dir, const char *name, const void *want, size_t want_len)
{
	uint8_t *data = NULL;
	size_t len = 0;
	char *p = path_in(dir, name);
	assert_int_equal(kh_file_read(p, 65536, &data, &len), KH_OK);
	assert_int_equal(len, want_len);
	if (want_len > 0)
		assert_memory_equal(data, want, want_len);
	kh_file_free(data, len);
	free(p);
}

/* Run a shell command, return its exit status (-1 when it did not exit normally). */
static int run(const char *cmd)
{
	int st = system(cmd);
	return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* First line a shell command prints (newline removed), into buf. */
static void run_read(const char *cmd, char *buf, size_t cap)
{
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	buf[0] = '\0';
	if (fgets(buf, (int)cap, f) == NULL)
		buf[0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	assert_int_equal(pclose(f), 0);
}

static int have_openssl(void)
{
	static int have = -1;
	if (have < 0)
		have = run("openssl version >/dev/null 2>&1") == 0;
	return have;
}

/* A fresh authority in a new temporary directory (dir is the directory, to kh_test_rmdir). */
static struct kh_authority *new_authority(const char *name, char **dir)
{
	struct kh_authority *a = NULL;
	*dir = kh_test_tmpdir();
	assert_non_null(*dir);
	assert_int_equal(kh_authority_init(*dir, name), KH_OK);
	assert_int_equal(kh_authority_open(*dir, &a), KH_OK);
	return a;
}

/* A key pair of the given type; only the public half matters here. */
static void new_pub(enum kh_cert_key key, uint8_t pub[32])
{
	uint8_t sk[32];
	if (key == KH_CERT_KEY_ED25519)
		assert_int_equal(kh_ed25519_keygen(sk, pub), KH_OK);
	else
		assert_int_equal(kh_x25519_keygen(sk, pub), KH_OK);
	kh_wipe(sk, sizeof sk);
}

/* Issue a certificate for a new key and return its DER. */
static size_t issue(struct kh_authority *a, enum kh_role role, uint32_t ua, enum kh_cert_key key,
		    uint8_t pub[32], uint8_t der[KH_CERT_MAX])
{
	size_t len = 0;
	new_pub(key, pub);
	assert_int_equal(kh_authority_issue(a, role, ua, key, pub, key == KH_CERT_KEY_ED25519 ? "sign" : "pair",
					    der, KH_CERT_MAX, &len),
			 KH_OK);
	assert_true(len > 0 && len <= KH_CERT_MAX);
	return len;
}

/* ---- file.c ---- */

static void test_file_atomic_replace(void **state)
{
	char *dir = kh_test_tmpdir(), *p;
	uint8_t *data = NULL;
	size_t len = 0;
	(void)state;

	assert_non_null(dir);
	p = path_in(dir, "f");
	assert_int_equal(kh_file_write_atomic(p, (const uint8_t *)"first version", 13, 0600), KH_OK);
	assert_int_equal(kh_file_write_atomic(p, (const uint8_t *)"two", 3, 0644), KH_OK);
	assert_int_equal(kh_file_read(p, 100, &data, &len), KH_OK);
	assert_int_equal(len, 3);
	assert_memory_equal(data, "two", 3);
	kh_file_free(data, len);
	assert_int_equal(file_mode(dir, "f"), 0644);
	assert_int_equal(count_entries(dir), 1); /* no temporary file left behind */

	/* An empty file is a file. */
	assert_int_equal(kh_file_write_atomic(p, NULL, 0, 0600), KH_OK);
	assert_int_equal(kh_file_read(p, 100, &data, &len), KH_OK);
	assert_int_equal(len, 0);
	kh_file_free(data, len);

	/* Limits and missing files. */
	assert_int_equal(kh_file_write_atomic(p, (const uint8_t *)"0123456789", 10, 0600), KH_OK);
	assert_int_equal(kh_file_read(p, 9, &data, &len), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_file_read(p, 10, &data, &len), KH_OK);
	kh_file_free(data, len);
	free(p);
	p = path_in(dir, "missing");
	assert_int_equal(kh_file_read(p, 10, &data, &len), KH_ERR_NOTFOUND);
	free(p);
	kh_file_free(NULL, 0);
	kh_test_rmdir(dir);
}

static void test_file_atomic_failure(void **state)
{
	char *dir = kh_test_tmpdir(), *p, *sub;
	(void)state;

	assert_non_null(dir);
	/* Into a directory that does not exist: fails, and creates nothing. */
	p = path_in(dir, "nodir/f");
	assert_int_not_equal(kh_file_write_atomic(p, (const uint8_t *)"x", 1, 0600), KH_OK);
	free(p);
	assert_int_equal(count_entries(dir), 0);

	/* The rename fails (a non-empty directory is in the way): the temporary file goes away. */
	sub = path_in(dir, "sub");
	assert_int_equal(mkdir(sub, 0700), 0);
	put_text(sub, "inside", "keep");
	assert_int_not_equal(kh_file_write_atomic(sub, (const uint8_t *)"x", 1, 0600), KH_OK);
	assert_int_equal(count_entries(dir), 1);
	assert_int_equal(count_entries(sub), 1);
	free(sub);
	kh_test_rmdir(dir);
}

static void test_keyfile_perm(void **state)
{
	char *dir = kh_test_tmpdir(), *p;
	uint8_t *data = NULL;
	size_t len = 0;
	(void)state;

	assert_non_null(dir);
	p = path_in(dir, "k");
	assert_int_equal(kh_file_write_atomic(p, (const uint8_t *)"secret", 6, 0600), KH_OK);
	assert_int_equal(kh_keyfile_read(p, 100, &data, &len), KH_OK);
	assert_int_equal(len, 6);
	kh_file_free(data, len);
	data = NULL;
	assert_int_equal(chmod(p, 0640), 0);
	assert_int_equal(kh_keyfile_read(p, 100, &data, &len), KH_ERR_KEYFILE_PERM);
	assert_null(data);
	assert_int_equal(chmod(p, 0604), 0);
	assert_int_equal(kh_keyfile_read(p, 100, &data, &len), KH_ERR_KEYFILE_PERM);
	assert_int_equal(chmod(p, 0400), 0);
	assert_int_equal(kh_keyfile_read(p, 100, &data, &len), KH_OK);
	kh_file_free(data, len);
	free(p);
	kh_test_rmdir(dir);
}

static void test_file_write_new(void **state)
{
	char *dir = kh_test_tmpdir(), *p, *q;
	(void)state;

	assert_non_null(dir);
	p = path_in(dir, "f");
	/* Created with the mode asked for (the umask does not apply) and the content given. */
	assert_int_equal(kh_file_write_new(p, (const uint8_t *)"first", 5, 0640), KH_OK);
	assert_int_equal(file_mode(dir, "f"), 0640);
	assert_content(dir, "f", "first", 5);

	/* Never replaced: the file stays byte for byte and keeps its mode. */
	assert_int_equal(kh_file_write_new(p, (const uint8_t *)"second one", 10, 0600), KH_ERR_EXISTS);
	assert_content(dir, "f", "first", 5);
	assert_int_equal(file_mode(dir, "f"), 0640);
	assert_int_equal(kh_file_write_new(p, NULL, 0, 0600), KH_ERR_EXISTS);
	assert_content(dir, "f", "first", 5);
	free(p);

	/* Anything at the name counts: a directory, a symbolic link that points nowhere. */
	p = path_in(dir, "d");
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(kh_file_write_new(p, (const uint8_t *)"x", 1, 0600), KH_ERR_EXISTS);
	assert_int_equal(count_entries(p), 0);
	free(p);
	p = path_in(dir, "link");
	q = path_in(dir, "target");
	assert_int_equal(symlink(q, p), 0);
	assert_int_equal(kh_file_write_new(p, (const uint8_t *)"x", 1, 0600), KH_ERR_EXISTS);
	assert_false(exists_in(dir, "target")); /* the link was not followed */
	free(p);
	free(q);

	/* An empty file is a file. */
	p = path_in(dir, "empty");
	assert_int_equal(kh_file_write_new(p, NULL, 0, 0600), KH_OK);
	assert_content(dir, "empty", "", 0);
	free(p);

	/* A missing directory: an I/O error, nothing created. */
	p = path_in(dir, "nodir/f");
	assert_int_equal(kh_file_write_new(p, (const uint8_t *)"x", 1, 0600), KH_ERR_IO);
	free(p);
	assert_false(exists_in(dir, "nodir"));

	/* Bad arguments. */
	p = path_in(dir, "g");
	assert_int_equal(kh_file_write_new(NULL, (const uint8_t *)"x", 1, 0600), KH_ERR_INVAL);
	assert_int_equal(kh_file_write_new("", (const uint8_t *)"x", 1, 0600), KH_ERR_INVAL);
	assert_int_equal(kh_file_write_new(p, NULL, 1, 0600), KH_ERR_INVAL);
	assert_int_equal(kh_file_write_new(p, (const uint8_t *)"x", 1, 010600), KH_ERR_INVAL);
	assert_false(exists_in(dir, "g"));
	free(p);

	/* f, d, link, empty: and not one temporary file left behind by any of the calls. */
	assert_int_equal(count_entries(dir), 4);
	assert_int_equal(count_tmp(dir), 0);
	kh_test_rmdir(dir);
}

/* Processes racing to create one file: exactly one succeeds, and its content is what is there. */
static void test_file_write_new_race(void **state)
{
	enum { N = 8 };
	char *dir = kh_test_tmpdir(), *p;
	char content[N][16];
	pid_t pid[N];
	int ok = 0, exists = 0, winner = -1, st, i;
	(void)state;

	assert_non_null(dir);
	p = path_in(dir, "f");
	for (i = 0; i < N; i++)
		snprintf(content[i], sizeof content[i], "writer %d", i);
	for (i = 0; i < N; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			kh_err r = kh_file_write_new(p, (const uint8_t *)content[i], strlen(content[i]), 0644);
			_exit(r == KH_OK ? 0 : r == KH_ERR_EXISTS ? 1 : 2);
		}
	}
	for (i = 0; i < N; i++) {
		assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
		assert_true(WIFEXITED(st));
		if (WEXITSTATUS(st) == 0) {
			ok++;
			winner = i;
		} else if (WEXITSTATUS(st) == 1) {
			exists++;
		}
	}
	assert_int_equal(ok, 1);
	assert_int_equal(exists, N - 1);
	assert_content(dir, "f", content[winner], strlen(content[winner]));
	assert_int_equal(count_entries(dir), 1);
	free(p);
	kh_test_rmdir(dir);
}

/* A key file owned by another uid is refused, whatever its mode (needs root to chown). */
static void test_keyfile_owner(void **state)
{
	struct kh_authority *a = NULL;
	char *dir, *p;
	uint8_t *data = NULL;
	size_t len = 0;
	(void)state;

	if (geteuid() != 0) {
		skip();
		return;
	}
	a = new_authority("Op", &dir);
	kh_authority_free(a);
	a = NULL;
	p = path_in(dir, "k");
	assert_int_equal(kh_file_write_new(p, (const uint8_t *)"secret", 6, 0600), KH_OK);
	assert_int_equal(chown(p, 65534, 65534), 0);
	assert_int_equal(kh_keyfile_read(p, 100, &data, &len), KH_ERR_KEYFILE_PERM);
	assert_null(data);
	/* Only key files: anyone's file may be read as a plain file. */
	assert_int_equal(kh_file_read(p, 100, &data, &len), KH_OK);
	kh_file_free(data, len);
	data = NULL;
	assert_int_equal(chown(p, 0, 0), 0);
	assert_int_equal(kh_keyfile_read(p, 100, &data, &len), KH_OK);
	kh_file_free(data, len);
	free(p);

	/* The authority's own key files are key files. */
	p = path_in(dir, "root.key");
	assert_int_equal(chown(p, 65534, 65534), 0);
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_KEYFILE_PERM);
	assert_null(a);
	assert_int_equal(chown(p, 0, 0), 0);
	free(p);
	p = path_in(dir, "master.key");
	assert_int_equal(chown(p, 65534, 0), 0);
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_KEYFILE_PERM);
	assert_int_equal(chown(p, 0, 0), 0);
	free(p);
	assert_int_equal(kh_authority_open(dir, &a), KH_OK);
	kh_authority_free(a);
	kh_test_rmdir(dir);
}

static void test_hex(void **state)
{
	static const uint8_t bytes[4] = {0x00, 0x9f, 0xa0, 0xff};
	uint8_t out[4];
	char hex[9];
	(void)state;

	kh_hex_encode(bytes, sizeof bytes, hex);
	assert_string_equal(hex, "009fa0ff");
	assert_int_equal(kh_hex_decode("009fa0ff", 8, out, 4), KH_OK);
	assert_memory_equal(out, bytes, 4);
	assert_int_equal(kh_hex_decode("009FA0FF\n", 9, out, 4), KH_OK);
	assert_memory_equal(out, bytes, 4);

	memset(out, 0x55, sizeof out);
	assert_int_equal(kh_hex_decode("009fa0f", 7, out, 4), KH_ERR_FORMAT);
	assert_int_equal(kh_hex_decode("009fa0ff0", 9, out, 4), KH_ERR_FORMAT);
	assert_int_equal(kh_hex_decode("009fa0ff\n\n", 10, out, 4), KH_ERR_FORMAT);
	assert_int_equal(kh_hex_decode("009fa0fg", 8, out, 4), KH_ERR_FORMAT);
	assert_int_equal(kh_hex_decode("/09fa0ff", 8, out, 4), KH_ERR_FORMAT);
	assert_int_equal(kh_hex_decode(":09fa0ff", 8, out, 4), KH_ERR_FORMAT);
	assert_int_equal(kh_hex_decode("@09fa0ff", 8, out, 4), KH_ERR_FORMAT);
	assert_int_equal(kh_hex_decode("009fa0f ", 8, out, 4), KH_ERR_FORMAT);
	/* Nothing written on failure. */
	for (size_t i = 0; i < sizeof out; i++)
		assert_int_equal(out[i], 0x55);

	/* Every byte value survives the round trip. */
	for (unsigned v = 0; v < 256; v++) {
		uint8_t b = (uint8_t)v, back;
		char h[3];
		kh_hex_encode(&b, 1, h);
		assert_int_equal(kh_hex_decode(h, 2, &back, 1), KH_OK);
		assert_int_equal(back, b);
	}
}

/* ---- roles ---- */

static void test_roles(void **state)
{
	enum kh_role r = KH_ROLE_NONE;
	(void)state;

	assert_string_equal(kh_role_name(KH_ROLE_CARD), "card");
	assert_string_equal(kh_role_name(KH_ROLE_CAM), "cam");
	assert_string_equal(kh_role_name(KH_ROLE_KEYCARD), "keycard");
	assert_null(kh_role_name(KH_ROLE_NONE));
	assert_null(kh_role_name((enum kh_role)99));
	for (int i = KH_ROLE_CARD; i <= KH_ROLE_KEYCARD; i++) {
		assert_int_equal(kh_role_parse(kh_role_name((enum kh_role)i), &r), KH_OK);
		assert_int_equal(r, i);
	}
	assert_int_equal(kh_role_parse("Card", &r), KH_ERR_INVAL);
	assert_int_equal(kh_role_parse("", &r), KH_ERR_INVAL);
	assert_int_equal(kh_role_parse(NULL, &r), KH_ERR_INVAL);
}

/* ---- authority ---- */

static void test_init_open(void **state)
{
	struct kh_authority *a = NULL;
	char *dir = kh_test_tmpdir(), *sub;
	const uint8_t *der;
	size_t len;
	uint8_t pk[32], pk2[32];
	char cmd[512], line[256];
	(void)state;

	assert_non_null(dir);
	/* init creates a missing directory. */
	sub = path_in(dir, "auth");
	assert_int_equal(kh_authority_init(sub, "Example TV"), KH_OK);
	assert_int_equal(kh_authority_open(sub, &a), KH_OK);
	assert_string_equal(kh_authority_name(a), "Example TV");
	kh_authority_root_der(a, &der, &len);
	assert_true(len > 0 && len <= KH_CERT_MAX);
	kh_authority_root_pk(a, pk);
	assert_int_equal(kh_cert_root_pk(der, len, pk2), KH_OK);
	assert_memory_equal(pk, pk2, 32);
	/* The root is a CA, never a module certificate. */
	assert_int_equal(kh_cert_check(der, len, pk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, NULL), KH_ERR_CERT);

	assert_int_equal(file_mode(sub, "root.key"), 0600);
	assert_int_equal(file_mode(sub, "master.key"), 0600);
	assert_int_equal(file_mode(sub, "root.crt"), 0644);
	assert_int_equal(file_mode(sub, "next-ua") & 077, 044);
	assert_int_equal(count_entries(sub), 7); /* root.key root.crt master.key next-ua issued, two signers */

	/* A second init refuses, and changes nothing. */
	assert_int_equal(kh_authority_init(sub, "Example TV"), KH_ERR_EXISTS);
	assert_int_equal(kh_authority_init(sub, "Other"), KH_ERR_EXISTS);
	kh_authority_free(a);
	assert_int_equal(kh_authority_open(sub, &a), KH_OK);
	kh_authority_root_pk(a, pk2);
	assert_memory_equal(pk, pk2, 32);
	kh_authority_free(a);
	kh_authority_free(NULL);

	if (have_openssl()) {
		snprintf(cmd, sizeof cmd, "openssl x509 -noout -subject -nameopt sep_comma_plus_space,space_eq -in '%s/root.crt'", sub);
		run_read(cmd, line, sizeof line);
		assert_string_equal(line, "subject=O = Example TV, CN = Example TV root");
		snprintf(cmd, sizeof cmd, "openssl verify -x509_strict -CAfile '%s/root.crt' '%s/root.crt' >/dev/null 2>&1", sub, sub);
		assert_int_equal(run(cmd), 0);
		/* The root key file is PKCS#8 and matches the certificate. */
		snprintf(cmd, sizeof cmd, "head -1 '%s/root.key'", sub);
		run_read(cmd, line, sizeof line);
		assert_string_equal(line, "-----BEGIN PRIVATE KEY-----");
	}

	/* Names that cannot go into a certificate. */
	assert_int_equal(kh_authority_init(dir, ""), KH_ERR_INVAL);
	assert_int_equal(kh_authority_init(dir, "bad\nname"), KH_ERR_INVAL);
	assert_int_equal(kh_authority_init(dir, "0123456789012345678901234567890123456789012345678901234567890"),
			 KH_ERR_INVAL);
	assert_int_equal(kh_authority_init(dir, NULL), KH_ERR_INVAL);
	free(sub);
	kh_test_rmdir(dir);
}

/* KH_AUTHORITY_NAME_MAX is the longest name that makes a root, and one more is refused. */
static void test_name_limit(void **state)
{
	struct kh_authority *a = NULL;
	char name[KH_AUTHORITY_NAME_MAX + 2];
	char *dir = kh_test_tmpdir(), *sub;
	(void)state;

	assert_non_null(dir);
	assert_int_equal(KH_AUTHORITY_NAME_MAX, 59);
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	sub = path_in(dir, "long");
	assert_int_equal(strlen(name), KH_AUTHORITY_NAME_MAX + 1);
	assert_int_equal(kh_authority_init(sub, name), KH_ERR_INVAL);
	name[KH_AUTHORITY_NAME_MAX] = '\0';
	assert_int_equal(kh_authority_init(sub, name), KH_OK);
	assert_int_equal(kh_authority_open(sub, &a), KH_OK);
	assert_string_equal(kh_authority_name(a), name);
	kh_authority_free(a);
	free(sub);
	kh_test_rmdir(dir);
}

/*
 * An init that fails midway (root.crt cannot be created: a directory is in its place) removes
 * the files it made, so no half authority blocks a retry, and leaves alone what it did not make.
 */
static void test_init_undo(void **state)
{
	struct kh_authority *a = NULL;
	char *dir = kh_test_tmpdir(), *crt, *issued;
	(void)state;

	assert_non_null(dir);
	crt = path_in(dir, "root.crt");
	assert_int_equal(mkdir(crt, 0700), 0);
	assert_int_equal(kh_authority_init(dir, "Op"), KH_ERR_EXISTS);
	assert_false(exists_in(dir, "root.key"));
	assert_false(exists_in(dir, "master.key"));
	assert_false(exists_in(dir, "next-ua"));
	assert_false(exists_in(dir, "issued"));
	assert_int_equal(count_entries(dir), 1); /* the obstacle only */
	assert_int_equal(count_tmp(dir), 0);

	/* What was there before the call stays as it was. */
	issued = path_in(dir, "issued");
	assert_int_equal(mkdir(issued, 0700), 0);
	put_text(issued, "keep.crt", "kept");
	put_text(dir, "next-ua", "7\n");
	assert_int_equal(kh_authority_init(dir, "Op"), KH_ERR_EXISTS);
	assert_false(exists_in(dir, "root.key"));
	assert_false(exists_in(dir, "master.key"));
	assert_content(issued, "keep.crt", "kept", 4);
	assert_content(dir, "next-ua", "7\n", 2);
	assert_int_equal(count_entries(dir), 3);
	assert_int_equal(count_tmp(dir), 0);

	/* The obstacle gone, a retry makes a whole authority. */
	assert_int_equal(rmdir(crt), 0);
	assert_int_equal(kh_authority_init(dir, "Op"), KH_OK);
	assert_int_equal(kh_authority_open(dir, &a), KH_OK);
	kh_authority_free(a);
	assert_content(issued, "keep.crt", "kept", 4);
	assert_int_equal(count_tmp(dir), 0);
	/* And init still refuses an authority that is there. */
	assert_int_equal(kh_authority_init(dir, "Op"), KH_ERR_EXISTS);
	assert_int_equal(kh_authority_open(dir, &a), KH_OK);
	kh_authority_free(a);
	free(crt);
	free(issued);
	kh_test_rmdir(dir);
}

/* Processes racing to init one directory: exactly one succeeds, and the result opens. */
static void test_init_race(void **state)
{
	enum { N = 4 };
	struct kh_authority *a = NULL;
	char *dir = kh_test_tmpdir();
	pid_t pid[N];
	int ok = 0, st, i;
	(void)state;

	assert_non_null(dir);
	for (i = 0; i < N; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			kh_err r = kh_authority_init(dir, "Op");
			_exit(r == KH_OK ? 0 : r == KH_ERR_EXISTS ? 1 : 2);
		}
	}
	for (i = 0; i < N; i++) {
		assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
		assert_true(WIFEXITED(st));
		assert_true(WEXITSTATUS(st) <= 1);
		ok += WEXITSTATUS(st) == 0;
	}
	assert_int_equal(ok, 1);
	assert_int_equal(kh_authority_open(dir, &a), KH_OK);
	kh_authority_free(a);
	assert_int_equal(count_entries(dir), 7);
	kh_test_rmdir(dir);
}

static void test_open_refuses(void **state)
{
	struct kh_authority *a = NULL, *b;
	char *dir, *other = kh_test_tmpdir(), *p, *q;
	(void)state;

	a = new_authority("Op", &dir);
	kh_authority_free(a);
	a = NULL;

	chmod_in(dir, "root.key", 0644);
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_KEYFILE_PERM);
	assert_null(a);
	chmod_in(dir, "root.key", 0600);
	chmod_in(dir, "master.key", 0640);
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_KEYFILE_PERM);
	chmod_in(dir, "master.key", 0600);
	assert_int_equal(kh_authority_open(dir, &a), KH_OK);
	kh_authority_free(a);

	/* A broken counter or master key is found at open. */
	put_text(dir, "next-ua", "seven\n");
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_FORMAT);
	put_text(dir, "next-ua", "0\n");
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_FORMAT);
	put_text(dir, "next-ua", "3\n");
	p = path_in(dir, "master.key");
	assert_int_equal(kh_file_write_atomic(p, (const uint8_t *)"abcd\n", 5, 0600), KH_OK);
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_FORMAT);
	free(p);

	/* A root certificate that belongs to another key is refused. */
	assert_non_null(other);
	assert_int_equal(kh_authority_init(other, "Op"), KH_OK);
	b = NULL;
	p = path_in(other, "root.crt");
	q = path_in(dir, "root.crt");
	{
		uint8_t *data = NULL;
		size_t len = 0;
		assert_int_equal(kh_file_read(p, 65536, &data, &len), KH_OK);
		assert_int_equal(kh_file_write_atomic(q, data, len, 0644), KH_OK);
		kh_file_free(data, len);
	}
	assert_int_equal(kh_authority_open(other, &b), KH_OK);
	kh_authority_free(b);
	/* master.key is still bad in dir; give it a good one so the root mismatch is what fails. */
	{
		char *m = path_in(dir, "master.key");
		static const char hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
		assert_int_equal(kh_file_write_atomic(m, (const uint8_t *)hex, sizeof hex - 1, 0600), KH_OK);
		free(m);
	}
	assert_int_equal(kh_authority_open(dir, &a), KH_ERR_CERT);
	free(p);
	free(q);

	/* Missing directory. */
	p = path_in(dir, "nope");
	assert_int_equal(kh_authority_open(p, &a), KH_ERR_NOTFOUND);
	free(p);
	kh_test_rmdir(dir);
	kh_test_rmdir(other);
}

static void test_next_ua(void **state)
{
	struct kh_authority *a, *b;
	char *dir;
	uint32_t ua = 0;
	uint8_t *data = NULL;
	size_t len = 0;
	char *p;
	(void)state;

	a = new_authority("Op", &dir);
	assert_int_equal(kh_authority_next_ua(a, &ua), KH_OK);
	assert_int_equal(ua, 1);
	assert_int_equal(kh_authority_next_ua(a, &ua), KH_OK);
	assert_int_equal(ua, 2);
	/* A second handle on the same directory continues the same count. */
	assert_int_equal(kh_authority_open(dir, &b), KH_OK);
	assert_int_equal(kh_authority_next_ua(b, &ua), KH_OK);
	assert_int_equal(ua, 3);
	kh_authority_free(b);
	kh_authority_free(a);
	assert_int_equal(kh_authority_open(dir, &a), KH_OK);
	assert_int_equal(kh_authority_next_ua(a, &ua), KH_OK);
	assert_int_equal(ua, 4);
	p = path_in(dir, "next-ua");
	assert_int_equal(kh_file_read(p, 64, &data, &len), KH_OK);
	assert_int_equal(len, 2);
	assert_memory_equal(data, "5\n", 2);
	kh_file_free(data, len);
	free(p);

	/* The last module UA is handed out once, then the counter is exhausted: the UAs from
	 * KH_SIGNER_SERIAL_BASE up are the operator's signers'. */
	put_text(dir, "next-ua", "4278190079\n");
	assert_int_equal(kh_authority_next_ua(a, &ua), KH_OK);
	assert_int_equal(ua, KH_SIGNER_SERIAL_BASE - 1);
	ua = 7;
	assert_int_equal(kh_authority_next_ua(a, &ua), KH_ERR_TOO_LARGE);
	assert_int_equal(ua, 7);
	kh_authority_free(a);
	kh_test_rmdir(dir);
}

/*
 * The validity policy: five years by default, the operator's number of days when given, for the
 * signers made with the authority and every module certificate issued after; and the two signers
 * are certificates of their own roles from the serial range FF000000 up.
 */
static void test_validity_policy(void **state)
{
	char *dir = kh_test_tmpdir(), *d30, *d5;
	struct kh_authority *a;
	struct kh_cert_info ci;
	struct kh_cas_signer sg;
	uint8_t der[KH_CERT_MAX], pk[32], sk[32];
	size_t len;
	uint32_t ua;
	uint64_t now = (uint64_t)time(NULL);

	(void)state;
	d30 = path_in(dir, "thirty");
	d5 = path_in(dir, "default");
	assert_int_equal(kh_authority_init_days(d30, "Short", 30), KH_OK);
	assert_int_equal(kh_authority_init(d5, "Default"), KH_OK);
	assert_int_equal(kh_authority_init_days(d5, "X", KH_AUTHORITY_VALIDITY_MAX + 1), KH_ERR_INVAL);

	assert_int_equal(kh_authority_open(d30, &a), KH_OK);
	assert_int_equal(kh_authority_signer_load(d30, KH_ROLE_EMM_SIGNER, &sg, der, sizeof der, &len), KH_OK);
	assert_int_equal(sg.serial, KH_SIGNER_SERIAL_BASE + 1);
	kh_authority_root_pk(a, pk);
	assert_int_equal(kh_cert_check(der, len, pk, KH_ROLE_EMM_SIGNER, KH_CERT_KEY_ED25519, now, &ci), KH_OK);
	assert_true(ci.not_after <= now + 30 * 86400 + 120 && ci.not_after >= now + 30 * 86400 - 120);
	/* past its 30 days it is refused by everyone who checks validity */
	assert_int_equal(kh_cert_check(der, len, pk, KH_ROLE_EMM_SIGNER, KH_CERT_KEY_ED25519, now + 31 * 86400, &ci),
			 KH_ERR_CERT_EXPIRED);
	assert_int_equal(kh_ed25519_keygen(sk, pk), KH_OK);
	assert_int_equal(kh_authority_next_ua(a, &ua), KH_OK);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_CAM, ua, KH_CERT_KEY_ED25519, pk, "sign", der, sizeof der, &len),
			 KH_OK);
	kh_authority_root_pk(a, pk);
	assert_int_equal(kh_cert_check(der, len, pk, KH_ROLE_CAM, KH_CERT_KEY_ED25519, now, &ci), KH_OK);
	assert_true(ci.not_after <= now + 30 * 86400 + 120);
	kh_authority_free(a);

	assert_int_equal(kh_authority_open(d5, &a), KH_OK);
	assert_int_equal(kh_authority_signer_load(d5, KH_ROLE_ECM_SIGNER, &sg, der, sizeof der, &len), KH_OK);
	assert_int_equal(sg.serial, KH_SIGNER_SERIAL_BASE);
	kh_authority_root_pk(a, pk);
	assert_int_equal(kh_cert_check(der, len, pk, KH_ROLE_ECM_SIGNER, KH_CERT_KEY_ED25519, now, &ci), KH_OK);
	assert_true(ci.not_after <= now + (uint64_t)KH_AUTHORITY_VALIDITY_DEFAULT * 86400 + 120);
	assert_true(ci.not_after >= now + (uint64_t)KH_AUTHORITY_VALIDITY_DEFAULT * 86400 - 120);
	/* a second signer of a role is refused, the first kept */
	assert_int_equal(kh_authority_signer_new(a, KH_ROLE_ECM_SIGNER), KH_ERR_EXISTS);
	assert_int_equal(kh_authority_signer_new(a, KH_ROLE_CARD), KH_ERR_INVAL);
	kh_authority_free(a);
	kh_wipe(&sg, sizeof sg);
	kh_wipe(sk, sizeof sk);
	free(d30);
	free(d5);
	kh_test_rmdir(dir);
}

/* Issue sign and pair certificates for card and cam, check them with openssl and with us. */
static void test_issue_and_check(void **state)
{
	static const struct {
		enum kh_role role;
		enum kh_cert_key key;
		const char *use;
	} cases[] = {
		{KH_ROLE_CARD, KH_CERT_KEY_ED25519, "sign"},
		{KH_ROLE_CARD, KH_CERT_KEY_X25519, "pair"},
		{KH_ROLE_CAM, KH_CERT_KEY_ED25519, "sign"},
		{KH_ROLE_CAM, KH_CERT_KEY_X25519, "pair"},
	};
	struct kh_authority *a;
	struct kh_cert_info info;
	uint8_t der[KH_CERT_MAX], pub[32], rpk[32], pemder[KH_CERT_MAX];
	char *dir, cmd[768], line[512], want[256], fname[128];
	uint8_t *pem = NULL;
	size_t len, pemlen = 0, n;
	uint32_t ua = 0;
	uint64_t now = (uint64_t)time(NULL);
	(void)state;

	a = new_authority("Example TV", &dir);
	kh_authority_root_pk(a, rpk);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *rname = kh_role_name(cases[i].role);
		if (i % 2 == 0)
			assert_int_equal(kh_authority_next_ua(a, &ua), KH_OK);
		len = issue(a, cases[i].role, ua, cases[i].key, pub, der);

		memset(&info, 0xAA, sizeof info);
		assert_int_equal(kh_cert_check(der, len, rpk, cases[i].role, cases[i].key, now, &info), KH_OK);
		assert_int_equal(info.role, cases[i].role);
		assert_int_equal(info.ua, ua);
		assert_int_equal(info.key, cases[i].key);
		assert_memory_equal(info.pub, pub, 32);
		/* the default policy: five years */
		assert_true(info.not_after > now + (KH_AUTHORITY_VALIDITY_DEFAULT - 1ull) * 86400);
		assert_true(info.not_after < now + (KH_AUTHORITY_VALIDITY_DEFAULT + 1ull) * 86400);
		assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, NULL), KH_OK);

		/* The PEM copy in issued/ is the same certificate. */
		snprintf(fname, sizeof fname, "issued/%s-%08X-%s.crt", rname, (unsigned)ua, cases[i].use);
		{
			char *p = path_in(dir, fname);
			assert_int_equal(kh_file_read(p, 65536, &pem, &pemlen), KH_OK);
			free(p);
		}
		assert_int_equal(kh_cert_pem_to_der((const char *)pem, pemlen, pemder, sizeof pemder, &n), KH_OK);
		assert_int_equal(n, len);
		assert_memory_equal(pemder, der, len);
		assert_int_equal(kh_cert_pem_to_der((const char *)pem, pemlen, pemder, len - 1, &n), KH_ERR_BUF);
		kh_file_free(pem, pemlen);
		assert_int_equal(file_mode(dir, fname), 0644);

		if (!have_openssl())
			continue;
		snprintf(cmd, sizeof cmd, "openssl verify -x509_strict -CAfile '%s/root.crt' '%s/%s' >/dev/null 2>&1", dir,
			 dir, fname);
		assert_int_equal(run(cmd), 0);
		snprintf(cmd, sizeof cmd, "openssl x509 -noout -subject -nameopt sep_comma_plus_space,space_eq -in '%s/%s'",
			 dir, fname);
		run_read(cmd, line, sizeof line);
		snprintf(want, sizeof want, "subject=O = Example TV, OU = %s, serialNumber = %08X, CN = %s %08X", rname,
			 (unsigned)ua, rname, (unsigned)ua);
		assert_string_equal(line, want);
		/* The form the task names, whatever -nameopt the local openssl defaults to. */
		snprintf(cmd, sizeof cmd, "openssl x509 -noout -subject -in '%s/%s'", dir, fname);
		run_read(cmd, line, sizeof line);
		snprintf(want, sizeof want, "OU = %s", rname);
		assert_non_null(strstr(line, want));
		snprintf(want, sizeof want, "%08X", (unsigned)ua);
		assert_non_null(strstr(line, want));
	}
	/* A second certificate for the same UA and use is refused; so is a use that is not ours. */
	new_pub(KH_CERT_KEY_ED25519, pub);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_CAM, ua, KH_CERT_KEY_ED25519, pub, "sign", der, sizeof der, &len),
			 KH_ERR_EXISTS);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_CAM, ua + 1, KH_CERT_KEY_ED25519, pub, "../x", der, sizeof der, &len),
			 KH_ERR_INVAL);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_CAM, ua + 1, KH_CERT_KEY_ED25519, pub, "pair", der, sizeof der, &len),
			 KH_ERR_INVAL);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_NONE, ua + 1, KH_CERT_KEY_ED25519, pub, "sign", der, sizeof der, &len),
			 KH_ERR_INVAL);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_CAM, ua + 1, KH_CERT_KEY_ED25519, pub, "sign", der, 100, &len),
			 KH_ERR_BUF);
	kh_authority_free(a);
	kh_test_rmdir(dir);
}

/* The certificate in dir/fname as DER, with what kh_cert_check says of it. */
static size_t issued_der(const char *dir, const char *fname, uint8_t der[KH_CERT_MAX])
{
	uint8_t *pem = NULL;
	size_t pemlen = 0, n = 0;
	char *p = path_in(dir, fname);
	assert_int_equal(kh_file_read(p, 65536, &pem, &pemlen), KH_OK);
	assert_int_equal(kh_cert_pem_to_der((const char *)pem, pemlen, der, KH_CERT_MAX, &n), KH_OK);
	kh_file_free(pem, pemlen);
	free(p);
	return n;
}

/* Issuing the same role, UA and use twice: the second is refused and the first file stays. */
static void test_issue_twice(void **state)
{
	enum { N = 6 };
	struct kh_authority *a;
	uint8_t pub[32], pub2[32], der[KH_CERT_MAX], der2[KH_CERT_MAX], rpk[32];
	uint8_t pubs[N][32];
	uint8_t *before = NULL, *after = NULL;
	size_t len, len2 = 0, blen = 0, alen = 0;
	struct kh_cert_info info;
	pid_t pid[N];
	int ok = 0, winner = -1, st, i;
	char *dir, *p;
	(void)state;

	a = new_authority("Op", &dir);
	kh_authority_root_pk(a, rpk);
	len = issue(a, KH_ROLE_CARD, 42, KH_CERT_KEY_ED25519, pub, der);
	p = path_in(dir, "issued/card-0000002A-sign.crt");
	assert_int_equal(kh_file_read(p, 65536, &before, &blen), KH_OK);

	new_pub(KH_CERT_KEY_ED25519, pub2);
	memset(der2, 0x55, sizeof der2);
	assert_int_equal(kh_authority_issue(a, KH_ROLE_CARD, 42, KH_CERT_KEY_ED25519, pub2, "sign", der2, sizeof der2, &len2),
			 KH_ERR_EXISTS);
	assert_int_equal(len2, 0);
	assert_int_equal(der2[0], 0x55); /* no certificate handed out */
	assert_int_equal(kh_file_read(p, 65536, &after, &alen), KH_OK);
	assert_int_equal(alen, blen);
	assert_memory_equal(after, before, blen);
	kh_file_free(after, alen);
	kh_file_free(before, blen);
	free(p);
	/* Same UA, other use or other role: different files, both fine. */
	(void)issue(a, KH_ROLE_CARD, 42, KH_CERT_KEY_X25519, pub2, der2);
	(void)issue(a, KH_ROLE_CAM, 42, KH_CERT_KEY_ED25519, pub2, der2);
	assert_int_equal(issued_der(dir, "issued/card-0000002A-sign.crt", der2), len);
	assert_memory_equal(der2, der, len);
	kh_authority_free(a);

	/* Processes issuing for one UA and use at once, each with its own handle: one wins. */
	for (i = 0; i < N; i++)
		new_pub(KH_CERT_KEY_ED25519, pubs[i]);
	for (i = 0; i < N; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			struct kh_authority *b = NULL;
			uint8_t d[KH_CERT_MAX];
			size_t dl = 0;
			kh_err r = kh_authority_open(dir, &b);
			if (r == KH_OK)
				r = kh_authority_issue(b, KH_ROLE_CAM, 7, KH_CERT_KEY_ED25519, pubs[i], "sign", d, sizeof d, &dl);
			kh_authority_free(b);
			_exit(r == KH_OK ? 0 : r == KH_ERR_EXISTS ? 1 : 2);
		}
	}
	for (i = 0; i < N; i++) {
		assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
		assert_true(WIFEXITED(st));
		assert_true(WEXITSTATUS(st) <= 1);
		if (WEXITSTATUS(st) == 0) {
			ok++;
			winner = i;
		}
	}
	assert_int_equal(ok, 1);
	/* The file holds the winner's certificate, not a later one. */
	len = issued_der(dir, "issued/cam-00000007-sign.crt", der);
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_CAM, KH_CERT_KEY_ED25519, 0, &info), KH_OK);
	assert_memory_equal(info.pub, pubs[winner], 32);
	p = path_in(dir, "issued");
	assert_int_equal(count_tmp(p), 0);
	free(p);
	kh_test_rmdir(dir);
}

static void test_check_refuses(void **state)
{
	struct kh_authority *a, *foreign;
	struct kh_cert_info info;
	uint8_t der[KH_CERT_MAX + 1], bad[KH_CERT_MAX + 1], fder[KH_CERT_MAX], pub[32], rpk[32], frpk[32];
	const uint8_t *root;
	size_t len, flen, rlen;
	char *dir, *fdir;
	uint64_t now = (uint64_t)time(NULL);
	(void)state;

	a = new_authority("Op", &dir);
	foreign = new_authority("Op", &fdir); /* same name, different root */
	kh_authority_root_pk(a, rpk);
	kh_authority_root_pk(foreign, frpk);
	len = issue(a, KH_ROLE_CARD, 1, KH_CERT_KEY_X25519, pub, der);
	flen = issue(foreign, KH_ROLE_CARD, 1, KH_CERT_KEY_X25519, pub, fder);
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_CARD, KH_CERT_KEY_X25519, now, &info), KH_OK);

	memset(&info, 0x5A, sizeof info);
	/* Another operator's certificate. */
	assert_int_equal(kh_cert_check(fder, flen, rpk, KH_ROLE_CARD, KH_CERT_KEY_X25519, now, &info), KH_ERR_CERT);
	assert_int_equal(kh_cert_check(der, len, frpk, KH_ROLE_CARD, KH_CERT_KEY_X25519, now, &info), KH_ERR_CERT);
	/* Right operator, wrong role or key type. */
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_CAM, KH_CERT_KEY_X25519, now, &info), KH_ERR_CERT_ROLE);
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_CARD, KH_CERT_KEY_ED25519, now, &info), KH_ERR_CERT_ROLE);
	/* One flipped bit in the signature, or in the signed part. */
	memcpy(bad, der, len);
	bad[len - 1] ^= 0x01;
	assert_int_equal(kh_cert_check(bad, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	memcpy(bad, der, len);
	bad[len / 2] ^= 0x01;
	assert_int_equal(kh_cert_check(bad, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	/* Truncated, and with a trailing byte. */
	assert_int_equal(kh_cert_check(der, len - 1, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	assert_int_equal(kh_cert_check(der, 10, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	assert_int_equal(kh_cert_check(der, 0, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	assert_int_equal(kh_cert_check(NULL, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	memcpy(bad, der, len);
	bad[len] = 0;
	assert_int_equal(kh_cert_check(bad, len + 1, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	/* The root itself: correctly signed by the root, but a CA. */
	kh_authority_root_der(a, &root, &rlen);
	assert_int_equal(kh_cert_check(root, rlen, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_ERR_CERT);
	/* Outside the validity period. */
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, now + 25ull * 365 * 86400, &info),
			 KH_ERR_CERT_EXPIRED);
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 4102444800ull * 2, &info),
			 KH_ERR_CERT_EXPIRED);
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, now - 3600, &info),
			 KH_ERR_CERT_EXPIRED);
	/* Nothing was written to info by any refusal. */
	for (size_t i = 0; i < sizeof info; i++)
		assert_int_equal(((const uint8_t *)&info)[i], 0x5A);

	/* Exactly at the edges of the period. */
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info), KH_OK);
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, info.not_after, &info), KH_OK);
	assert_int_equal(kh_cert_check(der, len, rpk, KH_ROLE_NONE, KH_CERT_KEY_ANY, info.not_after + 1, &info),
			 KH_ERR_CERT_EXPIRED);

	/* kh_cert_root_pk takes roots only. */
	assert_int_equal(kh_cert_root_pk(der, len, pub), KH_ERR_CERT);
	assert_int_equal(kh_cert_root_pk(root, rlen - 1, pub), KH_ERR_CERT);
	memcpy(bad, root, rlen);
	bad[rlen - 1] ^= 0x80;
	assert_int_equal(kh_cert_root_pk(bad, rlen, pub), KH_ERR_CERT);
	assert_int_equal(kh_cert_root_pk(root, rlen, pub), KH_OK);
	assert_memory_equal(pub, rpk, 32);

	/* PEM that holds no certificate. */
	assert_int_equal(kh_cert_pem_to_der("hello", 5, bad, sizeof bad, &len), KH_ERR_CERT);

	kh_authority_free(a);
	kh_authority_free(foreign);
	kh_test_rmdir(dir);
	kh_test_rmdir(fdir);
}

static void test_card_keys(void **state)
{
	struct kh_authority *a, *b;
	uint8_t kp1[32], ku1[32], kp2[32], ku2[32], kp3[32], ku3[32];
	char *dir, *dir2, cmd[512], line[256], want[128];
	uint8_t *m = NULL;
	size_t mlen = 0;
	(void)state;

	a = new_authority("Op", &dir);
	b = new_authority("Op", &dir2);
	assert_int_equal(kh_authority_card_keys(a, 7, kp1, ku1), KH_OK);
	assert_int_equal(kh_authority_card_keys(a, 7, kp2, ku2), KH_OK);
	assert_memory_equal(kp1, kp2, 32);
	assert_memory_equal(ku1, ku2, 32);
	assert_memory_not_equal(kp1, ku1, 32);
	assert_int_equal(kh_authority_card_keys(a, 8, kp2, ku2), KH_OK);
	assert_memory_not_equal(kp1, kp2, 32);
	assert_memory_not_equal(ku1, ku2, 32);
	assert_int_equal(kh_authority_card_keys(b, 7, kp3, ku3), KH_OK);
	assert_memory_not_equal(kp1, kp3, 32);
	assert_memory_not_equal(ku1, ku3, 32);
	/* Same master after reopening: same keys. */
	kh_authority_free(a);
	assert_int_equal(kh_authority_open(dir, &a), KH_OK);
	assert_int_equal(kh_authority_card_keys(a, 7, kp2, ku2), KH_OK);
	assert_memory_equal(kp1, kp2, 32);
	assert_memory_equal(ku1, ku2, 32);

	/* Known answer from an independent HKDF: openssl kdf, info = label || be32(UA = 7). */
	if (have_openssl() && run("openssl kdf -help >/dev/null 2>&1") == 0) {
		char *p = path_in(dir, "master.key");
		char hex[65];
		assert_int_equal(kh_file_read(p, 256, &m, &mlen), KH_OK);
		free(p);
		assert_true(mlen >= 64);
		memcpy(hex, m, 64);
		hex[64] = '\0';
		kh_file_free(m, mlen);
		snprintf(cmd, sizeof cmd,
			 "openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt hexkey:%s "
			 "-kdfopt 'info:keyhole card personal v1' -kdfopt hexinfo:00000007 HKDF 2>/dev/null",
			 hex);
		kh_wipe(hex, sizeof hex);
		run_read(cmd, line, sizeof line);
		/* openssl prints upper-case hex pairs separated by colons. */
		for (int i = 0; i < 32; i++)
			snprintf(want + 3 * i, sizeof want - 3 * (size_t)i, "%02X%s", kp1[i], i < 31 ? ":" : "");
		if (strchr(line, ':') != NULL)
			assert_string_equal(line, want);
		kh_wipe(cmd, sizeof cmd);
	}
	kh_wipe(kp1, 32);
	kh_wipe(ku1, 32);
	kh_authority_free(a);
	kh_authority_free(b);
	kh_test_rmdir(dir);
	kh_test_rmdir(dir2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_atomic_replace),
		cmocka_unit_test(test_file_atomic_failure),
		cmocka_unit_test(test_keyfile_perm),
		cmocka_unit_test(test_file_write_new),
		cmocka_unit_test(test_file_write_new_race),
		cmocka_unit_test(test_keyfile_owner),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_roles),
		cmocka_unit_test(test_init_open),
		cmocka_unit_test(test_name_limit),
		cmocka_unit_test(test_init_undo),
		cmocka_unit_test(test_init_race),
		cmocka_unit_test(test_open_refuses),
		cmocka_unit_test(test_next_ua),
		cmocka_unit_test(test_issue_and_check),
		cmocka_unit_test(test_validity_policy),
		cmocka_unit_test(test_issue_twice),
		cmocka_unit_test(test_check_refuses),
		cmocka_unit_test(test_card_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
