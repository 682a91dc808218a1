/*
 * Prometheus metrics registry and the text exposition format, version 0.0.4
 * (prometheus.io/docs/instrumenting/exposition_formats). Families keep the order they were
 * first registered in, samples of a family are written together under one HELP and TYPE line,
 * as the format demands. A mutex guards the lists; values are atomics, so counting on the
 * request path takes no lock once a handle is held.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/http.h"

struct kh_metric {
	struct kh_metric *next;
	char *labels; /* NULL or k="v",... */
	_Atomic int64_t value;
	/* Set (under the registry's lock) by kh_metrics_counter_fn: the value is read from its
	 * owner when asked, not pushed. */
	int64_t (*read)(void *arg);
	void *read_arg;
};

struct family {
	struct family *next;
	char *name;
	char *help;
	enum kh_metric_type type;
	struct kh_metric *samples, **tail;
};

struct kh_metrics {
	pthread_mutex_t lock;
	struct family *families, **tail;
};

kh_err kh_metrics_new(struct kh_metrics **out)
{
	struct kh_metrics *m;

	if (!out)
		return KH_ERR_INVAL;
	m = calloc(1, sizeof *m);
	if (!m)
		return KH_ERR_NOMEM;
	if (pthread_mutex_init(&m->lock, NULL) != 0) {
		free(m);
		return KH_ERR_NOMEM;
	}
	m->tail = &m->families;
	*out = m;
	return KH_OK;
}

void kh_metrics_free(struct kh_metrics *m)
{
	struct family *f, *fn;
	struct kh_metric *s, *sn;

	if (!m)
		return;
	for (f = m->families; f; f = fn) {
		fn = f->next;
		for (s = f->samples; s; s = sn) {
			sn = s->next;
			free(s->labels);
			free(s);
		}
		free(f->name);
		free(f->help);
		free(f);
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static int valid_name(const char *s)
{
	if (!s || !*s)
		return 0;
	for (size_t i = 0; s[i]; i++) {
		char c = s[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
			 (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

/* Labels come from code, not from clients, but a stray newline would break the whole page. */
static int valid_labels(const char *s)
{
	for (; *s; s++)
		if (*s == '\n' || *s == '{' || *s == '}')
			return 0;
	return 1;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

kh_err kh_metrics_get(struct kh_metrics *m, enum kh_metric_type type, const char *name,
		      const char *help, const char *labels, struct kh_metric **out)
{
	struct family *f;
	struct kh_metric *s;
	kh_err r;

	if (!m || !out || !valid_name(name) ||
	    (type != KH_METRIC_COUNTER && type != KH_METRIC_GAUGE))
		return KH_ERR_INVAL;
	if (labels && !*labels)
		labels = NULL;
	if (labels && !valid_labels(labels))
		return KH_ERR_INVAL;
	if (help && strchr(help, '\n'))
		return KH_ERR_INVAL;
	pthread_mutex_lock(&m->lock);
	for (f = m->families; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			break;
	if (f && f->type != type) {
		r = KH_ERR_INVAL;
		goto out;
	}
	if (!f) {
		f = calloc(1, sizeof *f);
		if (!f) {
			r = KH_ERR_NOMEM;
			goto out;
		}
		f->name = strdup(name);
		f->help = dup_or_null(help);
		if (!f->name || (help && !f->help)) {
			free(f->name);
			free(f->help);
			free(f);
			r = KH_ERR_NOMEM;
			goto out;
		}
		f->type = type;
		f->tail = &f->samples;
		*m->tail = f;
		m->tail = &f->next;
	}
	for (s = f->samples; s; s = s->next)
		if ((!s->labels && !labels) || (s->labels && labels && strcmp(s->labels, labels) == 0))
			break;
	if (!s) {
		s = calloc(1, sizeof *s);
		if (!s) {
			r = KH_ERR_NOMEM;
			goto out;
		}
		s->labels = dup_or_null(labels);
		if (labels && !s->labels) {
			free(s);
			r = KH_ERR_NOMEM;
			goto out;
		}
		atomic_init(&s->value, 0);
		*f->tail = s;
		f->tail = &s->next;
	}
	*out = s;
	r = KH_OK;
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}

kh_err kh_metrics_counter(struct kh_metrics *m, const char *name, const char *help,
			  struct kh_metric **out)
{
	return kh_metrics_get(m, KH_METRIC_COUNTER, name, help, NULL, out);
}

kh_err kh_metrics_gauge(struct kh_metrics *m, const char *name, const char *help,
			struct kh_metric **out)
{
	return kh_metrics_get(m, KH_METRIC_GAUGE, name, help, NULL, out);
}

kh_err kh_metrics_counter_fn(struct kh_metrics *m, const char *name, const char *help, int64_t (*read)(void *arg),
			     void *arg)
{
	struct kh_metric *s = NULL;
	kh_err r;

	if (!read)
		return KH_ERR_INVAL;
	if ((r = kh_metrics_get(m, KH_METRIC_COUNTER, name, help, NULL, &s)) != KH_OK)
		return r;
	pthread_mutex_lock(&m->lock);
	s->read = read;
	s->read_arg = arg;
	pthread_mutex_unlock(&m->lock);
	return KH_OK;
}

void kh_metric_add(struct kh_metric *c, int64_t n)
{
	if (c)
		atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void kh_metric_set(struct kh_metric *g, int64_t v)
{
	if (g)
		atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

int64_t kh_metric_value(const struct kh_metric *c)
{
	return c ? atomic_load_explicit(&((struct kh_metric *)c)->value, memory_order_relaxed) : 0;
}

kh_err kh_metrics_label_escape(const char *v, char *out, size_t cap)
{
	size_t o = 0;

	if (!v || !out)
		return KH_ERR_INVAL;
	for (; *v; v++) {
		const char *rep = NULL;
		size_t k;
		if (*v == '\\')
			rep = "\\\\";
		else if (*v == '"')
			rep = "\\\"";
		else if (*v == '\n')
			rep = "\\n";
		k = rep ? 2 : 1;
		if (o + k >= cap)
			return KH_ERR_BUF;
		if (rep)
			memcpy(out + o, rep, 2);
		else
			out[o] = *v;
		o += k;
	}
	if (o >= cap)
		return KH_ERR_BUF;
	out[o] = '\0';
	return KH_OK;
}

/* HELP text escapes backslash and newline (the latter refused at registration). */
static void put_help(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else
			fputc(*s, f);
	}
}

kh_err kh_metrics_render(struct kh_metrics *m, char **out, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f;
	kh_err r = KH_OK;

	if (!m || !out)
		return KH_ERR_INVAL;
	f = open_memstream(&buf, &n);
	if (!f)
		return KH_ERR_NOMEM;
	pthread_mutex_lock(&m->lock);
	for (const struct family *fa = m->families; fa; fa = fa->next) {
		if (fa->help) {
			fprintf(f, "# HELP %s ", fa->name);
			put_help(f, fa->help);
			fputc('\n', f);
		}
		fprintf(f, "# TYPE %s %s\n", fa->name,
			fa->type == KH_METRIC_COUNTER ? "counter" : "gauge");
		for (const struct kh_metric *s = fa->samples; s; s = s->next) {
			int64_t v = s->read ? s->read(s->read_arg) : kh_metric_value(s);
			if (s->labels)
				fprintf(f, "%s{%s} %" PRId64 "\n", fa->name, s->labels, v);
			else
				fprintf(f, "%s %" PRId64 "\n", fa->name, v);
		}
	}
	pthread_mutex_unlock(&m->lock);
	if (ferror(f))
		r = KH_ERR_NOMEM;
	if (fclose(f) != 0)
		r = KH_ERR_NOMEM;
	if (r != KH_OK) {
		free(buf);
		return r;
	}
	*out = buf;
	if (len)
		*len = n;
	return KH_OK;
}
