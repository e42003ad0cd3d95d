import { useState } from "react";
import { initials, safeImageUrl } from "../lib/format";
import type { User } from "../lib/types";

/** The user's picture, or their initials on a colour derived from their id. */
export function Avatar({ user }: { user: User | null }) {
  const [brokenSrc, setBrokenSrc] = useState<string | null>(null);
  const src = safeImageUrl(user?.avatar_url);

  if (src && src !== brokenSrc) {
    return (
      // Decorative: the name is always shown next to it.
      <img
        className="avatar"
        src={src}
        alt=""
        width={36}
        height={36}
        referrerPolicy="no-referrer"
        onError={() => setBrokenSrc(src)}
      />
    );
  }
  const hue = user ? (user.id * 67) % 360 : 0;
  return (
    <span
      className="avatar avatar-initials"
      aria-hidden="true"
      style={{ backgroundColor: user ? `hsl(${hue} 45% 38%)` : undefined }}
    >
      {user ? initials(user.name) : "?"}
    </span>
  );
}
