/*
 * Route patterns of the HTTP server (docs/internals/http.md): "/v1/cards/{ua}/emms" split into
 * literal and {parameter} segments, checked once when added, matched per request with literal
 * segments preferred over parameters, earliest first.
 */
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

#define MAX_SEGS KH__HTTP_MAX_SEGS
#define MAX_PARAMS KH__HTTP_MAX_PARAMS

int kh__http_valid_method(const char *m)
{
	static const char *const ok[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
	for (size_t i = 0; m && i < sizeof ok / sizeof ok[0]; i++)
		if (strcmp(m, ok[i]) == 0)
			return 1;
	return 0;
}

static int valid_param_name(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

/* Split "/a/{b}/c" into segments; refuses empty segments and malformed {params}. */
kh_err kh__http_route_parse(struct kh__http_route *rt)
{
	char *p, *s;
	size_t nparams = 0;

	if (!rt->pattern || rt->pattern[0] != '/' || !rt->pattern[1])
		return KH_ERR_INVAL;
	rt->segbuf = strdup(rt->pattern + 1);
	if (!rt->segbuf)
		return KH_ERR_NOMEM;
	for (p = rt->segbuf; p; p = s) {
		size_t n;
		s = strchr(p, '/');
		if (s)
			*s++ = '\0';
		n = strlen(p);
		if (n == 0 || rt->nseg == MAX_SEGS)
			return KH_ERR_INVAL;
		if (p[0] == '{') {
			if (n < 3 || p[n - 1] != '}' || !valid_param_name(p + 1, n - 2) ||
			    nparams == MAX_PARAMS)
				return KH_ERR_INVAL;
			p[n - 1] = '\0';
			p++;
			rt->param_mask |= 1u << rt->nseg;
			nparams++;
		} else if (strchr(p, '{') || strchr(p, '}')) {
			return KH_ERR_INVAL;
		}
		rt->seg[rt->nseg++] = p;
	}
	return KH_OK;
}

int kh__http_route_same_shape(const struct kh__http_route *a, const struct kh__http_route *b)
{
	if (a->nseg != b->nseg || a->param_mask != b->param_mask)
		return 0;
	for (size_t i = 0; i < a->nseg; i++)
		if (!(a->param_mask >> i & 1) && strcmp(a->seg[i], b->seg[i]) != 0)
			return 0;
	return 1;
}

/*
 * Match path against the routes. Among matching patterns the one with a literal where the
 * others have a parameter, earliest in the path, wins: /v1/cards/new before /v1/cards/{ua}.
 * *found_path says whether any method has a pattern for the path (405 rather than 404), and
 * allow (cap bytes) receives their methods.
 */
const struct kh__http_route *kh__http_route_match(const struct kh__http_route *routes, size_t n,
						  const char *method, char *const *seg, size_t nseg,
						  int *found_path, char *allow, size_t cap)
{
	const struct kh__http_route *best = NULL;
	uint32_t best_score = 0;

	*found_path = 0;
	allow[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const struct kh__http_route *rt = &routes[i];
		uint32_t score = 0;
		size_t k;
		if (rt->nseg != nseg)
			continue;
		for (k = 0; k < nseg; k++) {
			if (rt->param_mask >> k & 1) {
				if (!seg[k][0])
					break;
			} else if (strcmp(rt->seg[k], seg[k]) != 0) {
				break;
			} else {
				score |= 1u << (MAX_SEGS - 1 - k);
			}
		}
		if (k != nseg)
			continue;
		*found_path = 1;
		if (!strstr(allow, rt->method) && strlen(allow) + strlen(rt->method) + 3 < cap) {
			if (allow[0])
				strcat(allow, ", ");
			strcat(allow, rt->method);
		}
		if (strcmp(rt->method, method) == 0 && (!best || score > best_score)) {
			best = rt;
			best_score = score;
		}
	}
	return best;
}
