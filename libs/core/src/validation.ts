import type { z } from 'zod';

/** One line per problem, each naming the path and the value: `layers.2.units = -3: Too small: …`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.length ? issue.path.join('.') : '(root)';
      const got = 'input' in issue && issue.input !== undefined ? ` = ${JSON.stringify(issue.input)}` : '';
      return `${path}${got}: ${issue.message}`;
    })
    .join('; ');
}
