/// <reference types="vite/client" />
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import styles from "../styles.css?raw";
import { Header } from "./Header";

/*
 * jsdom has no layout, so the wrap itself (a 40 px button growing to 61 px at 320-400 px
 * wide) is checked by the browser tests in tests/e2e. This checks that the rules which
 * prevent it reach the rendered elements: the sign-out form never shrinks and its label
 * never wraps, so it is the name that gives way, with an ellipsis.
 */
const LONG_NAME = "Bartholomew Montgomery-Smythe-Fortescue the Third";

let sheet: HTMLStyleElement;

beforeEach(() => {
  sheet = document.createElement("style");
  sheet.textContent = styles;
  document.head.append(sheet);
});

afterEach(() => {
  sheet.remove();
});

describe("Header", () => {
  it("keeps Sign out on one line and truncates a long name instead", () => {
    render(<Header user={{ id: 1, name: LONG_NAME, avatar_url: null }} connection="live" />);

    const button = screen.getByRole("button", { name: "Sign out" });
    const form = button.closest("form");
    expect(form).not.toBeNull();
    expect(getComputedStyle(form!).flexShrink).toBe("0");
    expect(getComputedStyle(button).whiteSpace).toBe("nowrap");

    const name = getComputedStyle(screen.getByText(LONG_NAME));
    expect(name.minWidth).toBe("0px");
    expect(name.overflow).toBe("hidden");
    expect(name.textOverflow).toBe("ellipsis");
    expect(name.whiteSpace).toBe("nowrap");
  });

  it("counts who is online, a button that leads to the list", async () => {
    const user = userEvent.setup();
    const onShow = vi.fn();
    render(
      <Header
        user={{ id: 1, name: "Ada", avatar_url: null }}
        connection="live"
        online={{ count: 3, onShow }}
      />,
    );
    const button = screen.getByRole("button", { name: "3 online" });
    expect(button).toHaveAttribute("title", "Show who is online");
    button.focus();
    await user.keyboard("{Enter}");
    expect(onShow).toHaveBeenCalledTimes(1);
  });

  it("shows no count before the server has said who is online", () => {
    render(<Header user={{ id: 1, name: "Ada", avatar_url: null }} connection="live" online={null} />);
    expect(screen.queryByRole("button", { name: /online/ })).toBeNull();
  });
});
